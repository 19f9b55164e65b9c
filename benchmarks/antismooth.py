"""Training-step cost of AttnScale, FeatScale and GFSA against plain DeiT-S, measured side by side.

    python -m benchmarks.antismooth                      # batch 32, 224 px, CPU
    python -m benchmarks.antismooth --batch 8 --steps 1 --repeats 9 --threads 1 --clock cpu   # shared CPU
    python -m benchmarks.antismooth --device cuda --batch 64
    python -m benchmarks.antismooth --device cuda --batch 128 --amp --methods gfsa --json gfsa.json

One training step = forward + cross-entropy + backward + AdamW step. The four models (timm's
deit_small_patch16_224 and its copies converted with each method) are timed interleaved: every
repeat runs ``--steps`` steps of each model in turn, and the table reports each model's median
step time, the median over repeats of its step time divided by the baseline's in the same repeat,
and the ratio of the fastest steps (the least disturbed on a loaded machine), next to the forward MACs from
``freqkit.flops`` (batch 1). Aims: GFSA <= 1.15x, AttnScale and FeatScale <= 1.03x.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from typing import Callable

import torch
from torch import nn

from benchmarks._common import add_common_args, describe, paired_ratio, ratio_entry, write_json
from benchmarks._common import sync as _sync

AIMS = {"deit_small (timm)": None, "attnscale": 1.03, "featscale": 1.03, "gfsa": 1.15}


def _build(img_size: int, methods: tuple[str, ...] = ("attnscale", "featscale", "gfsa")) -> dict[str, nn.Module]:
    import timm

    import freqkit

    base = timm.create_model("deit_small_patch16_224", img_size=img_size, num_classes=1000)
    models = {"deit_small (timm)": base}
    for method in methods:
        models[method] = freqkit.convert(copy.deepcopy(base), method)
    return models


def _step_fn(model: nn.Module, x: torch.Tensor, y: torch.Tensor, amp: bool) -> Callable[[], None]:
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    loss_fn = nn.CrossEntropyLoss()

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp):
            loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()

    return step


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per model per repeat")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved rounds; the median is reported")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per model first")
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: leave the default)")
    parser.add_argument("--amp", action="store_true", help="bfloat16 autocast for forward and loss")
    parser.add_argument("--compile", action="store_true", help="torch.compile each model (fuses the filters' elementwise ops)")
    parser.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="wall: perf_counter; cpu: this process's CPU time (steadier on a shared CPU machine; CPU device only)",
    )
    parser.add_argument("--methods", default="attnscale,featscale,gfsa", help="comma list of methods timed against plain DeiT-S")
    add_common_args(parser)
    args = parser.parse_args(argv)

    import freqkit

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.clock == "cpu" and device.type != "cpu":
        parser.error("--clock cpu measures host CPU time; use it with --device cpu only")
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    torch.manual_seed(0)
    methods = tuple(m for m in args.methods.split(",") if m)
    unknown = sorted(set(methods) - set(AIMS))
    if unknown:
        parser.error(f"unknown methods {unknown}; choose from attnscale, featscale, gfsa")
    models = _build(args.img_size, methods)
    macs = {name: freqkit.flops(m, (1, 3, args.img_size, args.img_size)) for name, m in models.items()}
    x = torch.randn(args.batch, 3, args.img_size, args.img_size, device=device)
    y = torch.randint(0, 1000, (args.batch,), device=device)
    steps = {}
    for name, model in models.items():
        model.to(device).train()
        steps[name] = _step_fn(torch.compile(model) if args.compile else model, x, y, args.amp)
        for _ in range(args.warmup):
            steps[name]()
    times: dict[str, list[float]] = {name: [] for name in models}
    for r in range(args.repeats):
        order = list(models) if r % 2 == 0 else list(reversed(models))  # no model always runs first
        for name in order:
            _sync(device)
            t0 = clock()
            for _ in range(args.steps):
                steps[name]()
            _sync(device)
            times[name].append((clock() - t0) / args.steps)

    base = "deit_small (timm)"
    med = {name: statistics.median(t) for name, t in times.items()}
    # paired ratios: each repeat's model time over the baseline time of the same repeat, so that load
    # changes between repeats (a shared machine) cancel; the minimum is the least-disturbed run
    paired = {name: paired_ratio(t, times[base]) for name, t in times.items()}
    fastest = {name: min(t) for name, t in times.items()}
    where = describe(device)
    amp = (", bf16 autocast" if args.amp else "") + (", torch.compile" if args.compile else "")
    print(
        f"training step (fwd + bwd + AdamW), batch {args.batch}, {args.img_size} px, {where}{amp}; "
        f"{args.repeats} interleaved repeats x {args.steps} steps, {args.clock} clock"
    )
    header = (
        f"{'model':<18} {'fwd GMACs':>9} {'MAC x':>6} {'attn GMACs':>10} {'pw GMACs':>8} {'median ms':>9} "
        f"{'min ms':>8} {'time x':>7} {'min x':>6} {'aim':>8}"
    )
    print(header)
    print("-" * len(header))
    for name in models:
        m = macs[name]
        aim = AIMS[name]
        verdict = "" if aim is None else f"{aim:.2f}{' ok' if paired[name] <= aim else ' !!'}"
        print(
            f"{name:<18} {m.total / 1e9:>9.3f} {m.total / macs[base].total:>6.3f} {m.by_kind['attention'] / 1e9:>10.3f} "
            f"{m.by_kind['pointwise'] / 1e9:>8.4f} {med[name] * 1e3:>9.1f} {fastest[name] * 1e3:>8.1f} "
            f"{paired[name]:>7.3f} {fastest[name] / fastest[base]:>6.3f} {verdict:>8}"
        )
    print("time x: median over repeats of (model step / baseline step in the same repeat); min x: ratio of the fastest steps")
    tag = f"b{args.batch} {args.img_size}px {'bf16' if args.amp else 'float32'}{' compiled' if args.compile else ''}"
    rows = [
        dict(
            model=name,
            fwd_gmacs=macs[name].total / 1e9,
            times_ms=[t * 1e3 for t in times[name]],
            median_ms=med[name] * 1e3,
            min_ms=fastest[name] * 1e3,
            time_x=paired[name],
            min_x=fastest[name] / fastest[base],
        )
        for name in models
    ]
    ratios = {
        f"{name}/deit_small train step {tag}": ratio_entry(paired[name], AIMS[name], "max") for name in models if name != base
    }
    write_json(args.json, "antismooth", args, rows, ratios, device, argv=argv)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
