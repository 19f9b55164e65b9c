"""Cost of ``freqkit.analyze`` relative to a plain forward pass of the same model on the same batch.

    python -m benchmarks.analyze                          # deit_small_patch16_224, 224 px, batch 32, CPU
    python -m benchmarks.analyze --batch 8 --repeats 1    # quick run on a shared machine
    python -m benchmarks.analyze --device cuda --batch 64
    python -m benchmarks.analyze --stream                 # streaming: 512 images from a folder, peak memory 24 vs 384

Streaming mode (``--stream``) writes ``--images`` synthetic 256 x 256 JPEGs to a temporary folder,
reads them through one DataLoader (the model's timm data config, ``--workers`` workers) and times,
in one run, a plain forward pass over the loader and ``analyze`` over the same loader (no
attention maps; aim: at most 2x). It then runs ``analyze`` over the first 24 and the first 384
images of the folder in two fresh processes and reports each one's peak memory (aim: flat,
within 25 %): the process's peak resident memory and its growth over the resident memory before
``analyze`` started (on CUDA, ``torch.cuda.max_memory_allocated``).

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

from benchmarks._common import add_common_args, paired_ratio, ratio_entry, write_json

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


def _write_images(folder, n: int) -> None:
    """n synthetic 256 x 256 photographs-like JPEGs (smooth random fields plus edges), seeded."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:256, 0:256] / 256.0
    for i in range(n):
        freq = rng.uniform(1, 12, size=(3, 2))
        phase = rng.uniform(0, 6.3, size=3)
        img = np.stack([np.sin(2 * np.pi * (f[0] * xx + f[1] * yy) + p) for f, p in zip(freq, phase)], -1)
        img += 0.3 * rng.standard_normal((256, 256, 3))
        img[int(rng.integers(20, 200)) :, int(rng.integers(20, 200)) :] += 1.0
        Image.fromarray(np.clip(127 + 60 * img, 0, 255).astype(np.uint8)).save(f"{folder}/{i:04d}.jpg", quality=90)


def _rss_now_mib() -> float:
    """The current resident memory of this process in MiB (Linux /proc; else the peak so far)."""
    import resource

    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return float(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux reports KiB


def _peak_child(args: argparse.Namespace) -> int:
    """Child process of --stream: analyze the first --peak images of --folder and print the peak memory as JSON."""
    import json
    import resource

    import freqkit

    device = torch.device(args.device)
    model = freqkit.models.create(args.model, img_size=args.img_size).to(device)
    rss_before = _rss_now_mib()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base_cuda = torch.cuda.memory_allocated(device)
    report = freqkit.analyze(model, args.folder, max_images=args.peak, batch_size=args.batch, num_workers=args.workers)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    out = {"images": report.settings["num_images"], "peak_rss_mib": peak, "rss_before_mib": rss_before}
    if device.type == "cuda":
        out["cuda_peak_mib"] = (torch.cuda.max_memory_allocated(device) - base_cuda) / 2**20
    print(json.dumps(out))
    return 0


def _stream(args: argparse.Namespace) -> int:
    import json
    import subprocess
    import sys
    import tempfile

    import freqkit
    from freqkit.analysis.stream import image_folder

    device = torch.device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        _write_images(tmp, args.images)
        print(f"wrote {args.images} images to a temporary folder in {time.perf_counter() - t0:.1f} s")
        model = freqkit.models.create(args.model, img_size=args.img_size).to(device)
        loader = torch.utils.data.DataLoader(
            image_folder(tmp, model, args.img_size),
            batch_size=args.batch,
            num_workers=args.workers,
            pin_memory=device.type == "cuda",
        )
        warm = next(iter(loader))[: min(4, args.batch)].to(device)
        with torch.no_grad():
            model(warm)
        freqkit.analyze(model, warm)  # warm-up: FFT plans, lazy imports

        def forward() -> None:
            with torch.no_grad():
                for x in loader:
                    model(x.to(device, non_blocking=True))

        runs = {"forward (baseline)": forward, "analyze": lambda: freqkit.analyze(model, loader)}
        wall: dict[str, list[float]] = {k: [] for k in runs}
        for _ in range(max(1, args.repeats)):
            for name, fn in runs.items():
                wall[name].append(_timed(fn, device)[0])
        print(
            f"{args.model} at {args.img_size or 'its data config'} px, {args.images} images from a folder, batch {args.batch}, "
            f"{args.workers} workers, {device}, torch threads {torch.get_num_threads()}, {args.repeats} repeat(s) (median)"
        )
        base = statistics.median(wall["forward (baseline)"])
        print(f"{'run':<22}{'wall s':>9}{'img/s':>9}{'ratio':>8}{'aim':>7}")
        for name in runs:
            w = statistics.median(wall[name])
            verdict = "" if name != "analyze" else ("   2.0x  ok" if w / base <= 2.0 else "   2.0x  MISSED")
            print(f"{name:<22}{w:>9.2f}{args.images / w:>9.1f}{w / base:>7.2f}x{verdict}")

        peaks = []
        for n in (24, 384):
            cmd = [
                sys.executable,
                "-m",
                "benchmarks.analyze",
                "--peak",
                str(n),
                "--folder",
                tmp,
                "--model",
                args.model,
                "--batch",
                str(args.batch),
                "--workers",
                str(args.workers),
                "--device",
                args.device,
            ]
            if args.img_size:
                cmd += ["--img-size", str(args.img_size)]
            if args.threads:
                cmd += ["--threads", str(args.threads)]
            res = subprocess.run(cmd, capture_output=True, text=True, check=True)
            peaks.append(json.loads(res.stdout.strip().splitlines()[-1]))
    print(f"{'images':>7}{'peak RSS MiB':>14}{'growth MiB':>12}" + (f"{'CUDA peak MiB':>15}" if device.type == "cuda" else ""))
    for p in peaks:
        line = f"{p['images']:>7}{p['peak_rss_mib']:>14.0f}{p['peak_rss_mib'] - p['rss_before_mib']:>12.0f}"
        if "cuda_peak_mib" in p:
            line += f"{p['cuda_peak_mib']:>15.0f}"
        print(line)
    a, b = peaks
    key = "cuda_peak_mib" if device.type == "cuda" else "peak_rss_mib"
    change = b[key] / a[key] - 1
    print(f"peak memory 384 vs 24 images: {change:+.1%} ({'ok' if abs(change) <= 0.25 else 'MISSED'}, aim: within 25 %)")
    rows = [dict(run=name, wall_s=wall[name], wall_median_s=statistics.median(wall[name])) for name in runs] + [
        dict(run="peak", **p) for p in peaks
    ]
    ratios = {
        "stream analyze/forward wall": ratio_entry(statistics.median(wall["analyze"]) / base, 2.0, "max"),
        "stream peak memory change 384 vs 24 images": ratio_entry(abs(change), 0.25, "max"),
    }
    write_json(args.json, "analyze", args, rows, ratios, device)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="deit_small_patch16_224")
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds after one warm-up; the median is reported")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: leave torch's default)")
    parser.add_argument(
        "--stream", action="store_true", help="streaming mode: --images images from a folder through a DataLoader"
    )
    parser.add_argument("--images", type=int, default=512, help="images written for --stream (default 512)")
    parser.add_argument("--workers", type=int, default=4, help="DataLoader workers for --stream (default 4)")
    parser.add_argument("--peak", type=int, default=0, help=argparse.SUPPRESS)  # child process of --stream
    parser.add_argument("--folder", default="", help=argparse.SUPPRESS)
    add_common_args(parser)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.peak:
        return _peak_child(args)
    if args.stream:
        if args.batch == 32 and "--batch" not in (argv or []):
            args.batch = 16
        args.img_size = args.img_size if "--img-size" in (argv if argv is not None else __import__("sys").argv) else None
        return _stream(args)

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
    print(
        f"{args.model} at {args.img_size}px, batch {args.batch}, {device}, torch threads {torch.get_num_threads()}, "
        f"{args.repeats} repeat(s) (median); CPU = this process's CPU time, steadier than wall time on a shared machine"
    )
    print(f"{'run':<22}{'wall s':>9}{'ratio':>8}{'CPU s':>9}{'ratio':>8}{'aim':>7}")
    for name in runs:
        w, c = statistics.median(wall[name]), statistics.median(cpu[name])
        aim = AIMS[name]
        verdict = "" if aim is None else ("  ok" if w / base_w <= aim else "  MISSED")
        aim_s = "" if aim is None else f"{aim:>6.1f}x"
        print(f"{name:<22}{w:>9.3f}{w / base_w:>7.2f}x{c:>9.3f}{c / base_c:>7.2f}x{aim_s}{verdict}")
    rows = [
        dict(
            run=name,
            wall_s=wall[name],
            cpu_s=cpu[name],
            wall_median_s=statistics.median(wall[name]),
            cpu_median_s=statistics.median(cpu[name]),
            wall_x=paired_ratio(wall[name], wall["forward (baseline)"]),
            cpu_x=paired_ratio(cpu[name], cpu["forward (baseline)"]),
        )
        for name in runs
    ]
    ratios = {
        f"{name}/forward wall": ratio_entry(paired_ratio(wall[name], wall["forward (baseline)"]), AIMS[name], "max")
        for name in runs
        if AIMS[name] is not None
    }
    write_json(args.json, "analyze", args, rows, ratios, device, argv=argv)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
