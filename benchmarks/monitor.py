"""Cost of the spectral monitor in training: ``freqkit.SpectralMonitor`` at the default interval vs training steps.

    python -m benchmarks.monitor                                  # vit_mini on shapes (64 px) and DeiT-S (224 px), CPU
    python -m benchmarks.monitor --models vit_mini --threads 1 --clock cpu
    python -m benchmarks.monitor --device cuda --deit-batch 64

For each model: one optimizer step (forward, cross-entropy, backward, clipping, AdamW, as ``freqkit.train``
runs it) and one monitor measurement (``SpectralMonitor.measure``: forward of the probe, per-layer hf_ratio,
token similarity, effective rank; history appended to a file) are timed interleaved, round by round. The
overhead at interval N is (monitor / step) / N, the paired median over rounds. ``--loop`` also times the
whole thing directly for the small models: N steps with the monitor against N steps without, interleaved.
The probe is what ``freqkit train`` uses: the first validation images, at most one batch (16 here).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F

from benchmarks._common import (
    add_common_args,
    clock,
    describe,
    paired_ratio,
    pick,
    ratio_entry,
    sync,
    time_interleaved,
    write_json,
)

MODELS = {
    # name -> (model spec, task, image size, classes, batch argument)
    "vit_mini": ("vit_mini", "segmentation", 64, 5, "batch"),
    "deit_s": ("deit_small_patch16_224", "classification", 224, 10, "deit_batch"),
}
AIM = 0.03  # at most 3 % of training time


def _time_model(args: argparse.Namespace, name: str, folder: Path, device: torch.device) -> tuple[dict, dict]:
    """Time one model's training step and monitor measurement; print its row; return (result row, ratios)."""
    from freqkit.data import build_datasets
    from freqkit.models.spec import build_model
    from freqkit.monitor import SpectralMonitor
    from freqkit.train.evaluate import input_stats, normalize
    from freqkit.train.monitoring import PROBE_IMAGES, probe_images
    from freqkit.train.optim import build_optimizer

    ratios = {}
    spec, task, size, k, batch_arg = MODELS[name]
    batch = getattr(args, batch_arg)
    torch.manual_seed(0)
    if name == "vit_mini":  # the freqkit compare recipe: shapes data
        ds, _ = build_datasets(f"shapes:size={size}", splits=("train", "val"))
        items = [ds["train"][i] for i in range(batch)]
        x01 = torch.stack([it[0] for it in items])
        y = torch.stack([torch.as_tensor(it[1]) for it in items])
        probe01 = probe_images(ds["val"], min(PROBE_IMAGES, batch))
    else:
        g = torch.Generator().manual_seed(0)
        x01, y = torch.rand(batch, 3, size, size, generator=g), torch.randint(0, k, (batch,), generator=g)
        probe01 = torch.rand(min(PROBE_IMAGES, batch), 3, size, size, generator=g)
    model = build_model(spec, task, k, size).to(device)
    opt = build_optimizer(model, 1e-3)
    mean, std = input_stats(model)
    x, y, probe = normalize(x01, mean, std).to(device), y.to(device), normalize(probe01, mean, std).to(device)
    net = getattr(model, "encoder", model)
    monitor = SpectralMonitor(net, probe, every=args.every, path=folder / f"{name}.jsonl")
    model.train()

    def step() -> None:
        loss = F.cross_entropy(model(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    counter = iter(range(10**9))
    times = time_interleaved(
        {"step": step, "monitor": lambda: monitor.measure(next(counter))}, args.repeats, 1, device, args.clock
    )
    per_call = paired_ratio(times["monitor"], times["step"])
    overhead = per_call / args.every
    loop_ratio = None
    if args.loop and name == "vit_mini":
        tick = clock(args.clock)
        plain, watched = [], []
        for r in range(args.repeats + 1):
            for mode in ("plain", "watched") if r % 2 == 0 else ("watched", "plain"):
                sync(device)
                t0 = tick()
                for _ in range(args.every):
                    step()
                if mode == "watched":
                    monitor.measure(next(counter))
                sync(device)
                if r:
                    (watched if mode == "watched" else plain).append(tick() - t0)
        loop_ratio = paired_ratio(watched, plain) - 1.0
    med_step, med_mon = statistics.median(times["step"]), statistics.median(times["monitor"])
    print(
        f"{name:<10}{batch:>6}{probe.shape[0]:>6}{1e3 * med_step:>10.1f}{1e3 * med_mon:>12.1f}{per_call:>14.3f}{100 * overhead:>9.2f}%"
        + (f"{100 * loop_ratio:>7.2f}%" if loop_ratio is not None else f"{'-':>8}")
    )
    row = {
        "model": name,
        "spec": spec,
        "task": task,
        "img_size": size,
        "batch": batch,
        "probe_images": int(probe.shape[0]),
        "every": args.every,
        "step_ms": [1e3 * t for t in times["step"]],
        "monitor_ms": [1e3 * t for t in times["monitor"]],
        "monitor_per_step": per_call,
        "overhead": overhead,
        "loop_overhead": loop_ratio,
    }
    ratios[f"{name} monitor overhead at every={args.every}"] = ratio_entry(overhead, AIM, "max")
    if loop_ratio is not None:
        ratios[f"{name} measured loop overhead at every={args.every}"] = ratio_entry(loop_ratio, AIM, "max")
    return row, ratios


def main(argv: list[str] | None = None) -> int:
    """Time the models and print the table."""
    from freqkit.train.config import TrainConfig

    default_every = TrainConfig().monitor_every
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, of {list(MODELS)}")
    p.add_argument(
        "--every", type=int, default=default_every, help=f"monitor interval in steps (default: freqkit train's, {default_every})"
    )
    p.add_argument("--batch", type=int, default=16, help="vit_mini images per step (freqkit compare's default)")
    p.add_argument("--deit-batch", type=int, default=8, help="DeiT-S images per step")
    p.add_argument("--repeats", type=int, default=5, help="interleaved rounds after one warm-up round")
    p.add_argument("--loop", action="store_true", help="also time N steps with vs without the monitor (vit_mini only)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument(
        "--clock", default="wall", choices=("wall", "cpu"), help="cpu: process CPU time (steadier on a shared machine)"
    )
    add_common_args(p)
    args = p.parse_args(argv)
    names = pick(p, args.models, MODELS)
    if args.threads:
        torch.set_num_threads(args.threads)

    device = torch.device(args.device)
    tmp = tempfile.TemporaryDirectory(prefix="freqkit-bench-monitor-")
    rows, ratios = [], {}
    print(
        f"{describe(device)}, {args.clock} clock; monitor every {args.every} steps; median of {args.repeats} interleaved rounds"
    )
    print(
        f"{'model':<10}{'batch':>6}{'probe':>6}{'ms/step':>10}{'ms/monitor':>12}{'monitor/step':>14}{'overhead':>10}{'loop':>8}"
    )
    for name in names:
        row, more = _time_model(args, name, Path(tmp.name), device)
        rows.append(row)
        ratios.update(more)
    tmp.cleanup()
    print(f"aim: overhead <= {100 * AIM:.0f}% of training time")
    write_json(args.json, "monitor", args, rows, ratios, device, argv=argv)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
