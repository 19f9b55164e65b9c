"""Forward latency of SPANet / SPANetV2 and their SPAM layers: freqkit paths vs the released algorithm.

    python -m benchmarks.spanet                                   # 224 px batch 32 and 512 px batch 4, CPU float32
    python -m benchmarks.spanet --sizes 224:4 --repeats 3 --threads 1 --clock cpu   # shared, loaded CPU
    python -m benchmarks.spanet --device cuda                     # float32 and bfloat16 on a GPU
    python -m benchmarks.spanet --layers-only --sizes 224:4
    python -m benchmarks.spanet --device cuda --models-only --compile --json spanet.json

Models (inference mode, random init): SPANet-S with SPAM's exact low-bin path ("bins") and with the
released algorithm ("reference": full complex FFT, fftshift, three branches), SPANetV2-S18-pure
fused / reference, and timm's ``convformer_s18`` and ``poolformer_s24``. All models of one
setting are timed interleaved (every repeat runs each once), and the table reports medians and
ratios measured in the same run. Layers: SPAM v1 ("bins", "rfft", "reference") and SPAM v2
("fused", "reference") at the four stage shapes of that input size.
Aims: SPAM v1 >= 1.5x faster than its reference, SPAM v2 >= 1.3x, SPANet-S <= 1.2x convformer_s18.
"""

from __future__ import annotations

import argparse
import statistics
from typing import Callable

import torch
from torch import nn

from benchmarks._common import add_common_args, describe, paired_ratio, pick, ratio_entry, time_interleaved, write_json

STAGES_V1 = ((64, 2), (128, 2), (320, 1), (512, 1))  # (channels, radius) of SPANet-S
STAGES_V2 = (64, 128, 320, 512)  # SPANetV2-S18


def _time_interleaved(
    fns: dict[str, Callable[[], None]], repeats: int, warmup: int, device: torch.device, clock: str, calls: int = 1
) -> dict[str, list[float]]:
    """Seconds per call of every fn under inference mode, interleaved (see benchmarks._common.time_interleaved)."""
    with torch.inference_mode():
        return time_interleaved(fns, repeats, warmup, device, clock, calls=calls)


MODEL_SPECS = {
    "spanet_small [bins]": ("spanet_small", {}),
    "spanet_small [reference]": ("spanet_small", {"fused": False}),
    "spanetv2_s18_pure [fused]": ("spanetv2_s18_pure", {}),
    "spanetv2_s18_pure [reference]": ("spanetv2_s18_pure", {"fused": False}),
    "convformer_s18 (timm)": ("convformer_s18", {}),
    "poolformer_s24 (timm)": ("poolformer_s24", {}),
}


def _models(dtype: torch.dtype, device: torch.device, labels: list[str], compile: bool = False) -> dict[str, nn.Module]:
    import timm

    import freqkit.models  # noqa: F401  (registers spanet*)

    out = {}
    for label in labels:
        name, kw = MODEL_SPECS[label]
        torch.manual_seed(0)
        model = timm.create_model(name, **kw).eval().to(device=device, dtype=dtype)
        out[label] = torch.compile(model) if compile else model
    return out


def _layers(size: int, dtype: torch.dtype, device: torch.device) -> dict[str, tuple[nn.Module, torch.Tensor]]:
    from freqkit.layers import SPAM, SPAMv2

    out = {}
    for i, ((c1, r), c2) in enumerate(zip(STAGES_V1, STAGES_V2)):
        side = size // 2 ** (i + 2)
        for impl in ("bins", "rfft", "reference"):
            torch.manual_seed(0)
            out[f"SPAM v1 s{i + 1} {c1}x{side}^2 [{impl}]"] = (
                SPAM(c1, radius=r, fused=impl != "reference", transform="rfft" if impl == "rfft" else "bins"),
                (c1, side, False),
            )
        for impl in ("fused", "reference"):
            torch.manual_seed(0)
            # gains sized for a 224 input, as in the model: other inputs resize them
            out[f"SPAM v2 s{i + 1} {c2}x{side}^2 [{impl}]"] = (
                SPAMv2(c2, size=224 // 2 ** (i + 2), fused=impl == "fused"),
                (c2, side, True),
            )
    return {k: (m.eval().to(device=device, dtype=dtype), shape) for k, (m, shape) in out.items()}


def _report(title: str, times: dict[str, list[float]]) -> dict[str, float]:
    med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    best = {k: min(v) * 1e3 for k, v in times.items()}
    print(f"\n{title}")
    print(f"{'':<40}{'median ms':>12}{'min ms':>10}")
    for k in times:
        print(f"{k:<40}{med[k]:>12.2f}{best[k]:>10.2f}")
    return med


def _ratio_line(label: str, num: float, den: float, aim: str) -> float:
    print(f"  {label:<58}{num / den:>7.2f}x   ({aim})")
    return num / den


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="224:32,512:4", help="comma-separated SIZE:BATCH settings (default 224:32,512:4)")
    parser.add_argument("--batch", type=int, default=0, help="override the batch of every setting")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved timed rounds (median reported)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds first")
    parser.add_argument("--calls", type=int, default=1, help="calls per model per repeat (more for short GPU forwards)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtypes", default="", help="float32,bfloat16 (default: float32 on CPU, both on a GPU)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: leave the default)")
    parser.add_argument(
        "--clock", choices=("wall", "cpu"), default="wall", help="cpu: process CPU time (steadier on a shared CPU)"
    )
    parser.add_argument("--layers-only", action="store_true", help="only the SPAM layers")
    parser.add_argument("--models-only", action="store_true", help="only the models")
    parser.add_argument("--models", default=",".join(MODEL_SPECS), help="comma list of the model labels to time")
    parser.add_argument("--compile", action="store_true", help="torch.compile every model (models only)")
    add_common_args(parser)
    args = parser.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtypes = args.dtypes or ("float32,bfloat16" if device.type == "cuda" else "float32")
    settings = []
    for item in args.sizes.split(","):
        size, _, batch = item.partition(":")
        settings.append((int(size), args.batch or int(batch or 1)))
    labels = pick(parser, args.models, MODEL_SPECS)
    print(
        f"device: {describe(device)}; torch {torch.__version__}; clock {args.clock}; repeats {args.repeats}"
        f"{'; torch.compile' if args.compile else ''}"
    )
    rows: list[dict] = []
    ratios: dict[str, dict] = {}
    aims = {
        ("spanet_small [bins]", "convformer_s18 (timm)"): (1.2, "max"),
        ("spanetv2_s18_pure [fused]", "convformer_s18 (timm)"): (1.3, "max"),
        ("spanet_small [reference]", "spanet_small [bins]"): (None, None),
        ("spanetv2_s18_pure [reference]", "spanetv2_s18_pure [fused]"): (None, None),
        ("spanet_small [bins]", "poolformer_s24 (timm)"): (None, None),
    }

    for dtype_name in dtypes.split(","):
        dtype = getattr(torch, dtype_name)
        for size, batch in settings:
            if not args.layers_only:
                models = _models(dtype, device, labels, args.compile)
                x = torch.randn(batch, 3, size, size, device=device, dtype=dtype)
                times = _time_interleaved(
                    {k: (lambda m=m, x=x: m(x)) for k, m in models.items()},
                    args.repeats,
                    args.warmup,
                    device,
                    args.clock,
                    args.calls,
                )
                med = _report(f"models, {dtype_name}, {size}x{size}, batch {batch}", times)
                tag = f"{size}px b{batch} {dtype_name}{' compiled' if args.compile else ''}"
                for k, t in times.items():
                    rows.append(
                        dict(
                            kind="model",
                            model=k,
                            size=size,
                            batch=batch,
                            dtype=dtype_name,
                            compiled=args.compile,
                            times_ms=[v * 1e3 for v in t],
                            median_ms=med[k],
                        )
                    )
                print("ratios (median of per-repeat ratios):")
                for (num, den), (aim, kind) in aims.items():
                    if num in times and den in times:
                        value = paired_ratio(times[num], times[den])
                        note = f"aim {'<=' if kind == 'max' else '>='} {aim}" if aim else "latency ratio"
                        print(f"  {num + ' / ' + den:<58}{value:>7.2f}x   ({note})")
                        ratios[f"{num} / {den} {tag}"] = ratio_entry(value, aim, kind)
                del models
            if not args.models_only:
                layers = _layers(size, dtype, device)
                fns = {}
                for k, (m, (c, side, last)) in layers.items():
                    shape = (batch, side, side, c) if last else (batch, c, side, side)
                    inp = torch.randn(*shape, device=device, dtype=dtype)
                    fns[k] = lambda m=m, inp=inp: m(inp)
                times = _time_interleaved(fns, args.repeats, args.warmup, device, args.clock, args.calls)
                med = _report(f"SPAM layers, {dtype_name}, input {size}x{size}, batch {batch}", times)
                print("speedup over the released algorithm (median; 'all stages' = summed stage latencies):")
                for version, fast, others in (("v1", "bins", ("rfft",)), ("v2", "fused", ())):
                    keys = [k for k in med if k.startswith(f"SPAM {version}")]
                    stages = sorted({k.rsplit(" [", 1)[0] for k in keys})
                    for impl in (fast, *others):
                        total_ref = total_fast = 0.0
                        for st in stages:
                            ref, cur = med[f"{st} [reference]"], med[f"{st} [{impl}]"]
                            total_ref, total_fast = total_ref + ref, total_fast + cur
                            _ratio_line(f"{st} reference / {impl}", ref, cur, "speedup")
                        aim = 1.5 if version == "v1" else 1.3
                        value = _ratio_line(
                            f"SPAM {version} all stages reference / {impl}", total_ref, total_fast, f"aim >= {aim}"
                        )
                        ratios[f"SPAM {version} reference / {impl} all stages {size}px b{batch} {dtype_name}"] = ratio_entry(
                            value, aim if impl == fast else None, "min" if impl == fast else None
                        )
                for k, t in times.items():
                    rows.append(
                        dict(
                            kind="layer",
                            layer=k,
                            size=size,
                            batch=batch,
                            dtype=dtype_name,
                            times_ms=[v * 1e3 for v in t],
                            median_ms=med[k],
                        )
                    )
                del layers
    write_json(args.json, "spanet", args, rows, ratios, device, argv=argv)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
