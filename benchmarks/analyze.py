"""Cost of ``freqkit.analyze`` relative to a plain forward pass of the same model on the same batch.

    python -m benchmarks.analyze                          # deit_small_patch16_224, 224 px, batch 32, CPU
    python -m benchmarks.analyze --batch 8 --repeats 1    # quick run on a shared machine
    python -m benchmarks.analyze --device cuda --batch 64

Timed side by side in one process, interleaved: every repeat runs a plain ``model(x)`` under
``torch.no_grad``, then ``analyze(model, x)`` without and with attention capture (built-in
images, one batch), and the table reports each one's median time and its ratio to the forward
pass. Aims: at most 3x without attention maps and 8x with them. ``analyze`` computes every
statistic exactly (all queries of every head for the local response); plotting and JSON export
are not included.
"""
from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable

import torch

AIMS = {"forward (baseline)": None, "analyze": 3.0, "analyze --attention": 8.0}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn: Callable[[], object], device: torch.device) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process over all its threads)."""
    _sync(device)
    t0, c0 = time.perf_counter(), time.process_time()
    fn()
    _sync(device)
    return time.perf_counter() - t0, time.process_time() - c0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="deit_small_patch16_224")
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds after one warm-up; the median is reported")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: leave torch's default)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    import timm

    import freqkit
    from freqkit.data.builtin import builtin_images

    device = torch.device(args.device)
    model = timm.create_model(args.model, img_size=args.img_size).to(device).eval()
    base = builtin_images((args.img_size, args.img_size))
    x = base.repeat((args.batch + len(base) - 1) // len(base), 1, 1, 1)[: args.batch].to(device)

    def forward() -> None:
        with torch.no_grad():
            model(x)

    runs = {
        "forward (baseline)": forward,
        "analyze": lambda: freqkit.analyze(model, x),
        "analyze --attention": lambda: freqkit.analyze(model, x, attention=True),
    }
    for fn in runs.values():  # warm-up: allocator, FFT plans, lazy imports
        fn()
    wall: dict[str, list[float]] = {k: [] for k in runs}
    cpu: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(max(1, args.repeats)):
        for name, fn in runs.items():
            w, c = _timed(fn, device)
            wall[name].append(w)
            cpu[name].append(c)

    base_w = statistics.median(wall["forward (baseline)"])
    base_c = statistics.median(cpu["forward (baseline)"])
    print(f"{args.model} at {args.img_size}px, batch {args.batch}, {device}, torch threads {torch.get_num_threads()}, "
          f"{args.repeats} repeat(s) (median); CPU = this process's CPU time, steadier than wall time on a shared machine")
    print(f"{'run':<22}{'wall s':>9}{'ratio':>8}{'CPU s':>9}{'ratio':>8}{'aim':>7}")
    for name in runs:
        w, c = statistics.median(wall[name]), statistics.median(cpu[name])
        aim = AIMS[name]
        verdict = "" if aim is None else ("  ok" if w / base_w <= aim else "  MISSED")
        aim_s = "" if aim is None else f"{aim:>6.1f}x"
        print(f"{name:<22}{w:>9.3f}{w / base_w:>7.2f}x{c:>9.3f}{c / base_c:>7.2f}x{aim_s}{verdict}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
