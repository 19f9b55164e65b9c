"""Cost of ``freqkit.analyze`` relative to a plain forward pass of the same model on the same batch.

    python -m benchmarks.analyze                          # deit_small_patch16_224, 224 px, batch 32, CPU
    python -m benchmarks.analyze --batch 8 --repeats 1    # quick run on a shared machine
    python -m benchmarks.analyze --device cuda --batch 64
    python -m benchmarks.analyze --stream --model deit_tiny_patch16_224,deit_small_patch16_224  # folder, RSS per count

Streaming mode (``--stream``) writes synthetic 256 x 256 JPEGs to a temporary folder and, for every
model of ``--model`` (comma-separated, e.g. ``deit_tiny_patch16_224,deit_small_patch16_224``), reads
the first ``--images`` of them through one DataLoader (the model's timm data config, ``--batch``,
``--workers``) and times a plain forward pass over the loader and ``freqkit.analyze`` over the same
loader (no attention maps, report and method figures included: the library call of
``freqkit analyze MODEL --images DIR --no-attention``), interleaved: every repeat runs every pair, the
ratio is the median of same-repeat ratios (aim: at most 2x). It then runs ``analyze`` of the first
model over the first n images for each n of ``--peaks`` (default 24, 96, 384, 768, 1536), each in a
fresh process, and reports each one's peak memory (aim: flat, within 10 % of the first): the process's
peak resident memory and its growth over the resident memory before ``analyze`` started (on CUDA,
``torch.cuda.max_memory_allocated``).

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

from benchmarks._common import add_common_args, load_average, paired_ratio, ratio_entry, write_json

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
    from freqkit.analysis.malloc import fix_malloc_thresholds

    device = torch.device(args.device)
    model = freqkit.models.create(args.model, img_size=args.img_size).to(device)
    rss_before = _rss_now_mib()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base_cuda = torch.cuda.memory_allocated(device)
    fix_malloc_thresholds()  # as the `freqkit analyze` command does for its process
    report = freqkit.analyze(model, args.folder, max_images=args.peak, batch_size=args.batch, num_workers=args.workers)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    out = {"images": report.settings["num_images"], "peak_rss_mib": peak, "rss_before_mib": rss_before}
    if device.type == "cuda":
        out["cuda_peak_mib"] = (torch.cuda.max_memory_allocated(device) - base_cuda) / 2**20
    print(json.dumps(out))
    return 0


def _peaks(args: argparse.Namespace, folder: str, model: str) -> list[dict]:
    """Peak memory of ``analyze`` over the first n images of ``folder`` for each n of --peaks, each in a fresh process."""
    import json
    import subprocess
    import sys

    out = []
    for n in (int(v) for v in args.peaks.split(",")):
        cmd = [sys.executable, "-m", "benchmarks.analyze", "--peak", str(n), "--folder", folder, "--model", model]
        cmd += ["--batch", str(args.batch), "--workers", str(args.workers), "--device", args.device]
        if args.img_size:
            cmd += ["--img-size", str(args.img_size)]
        if args.threads:
            cmd += ["--threads", str(args.threads)]
        res = subprocess.run(cmd, capture_output=True, text=True, check=True)
        out.append(json.loads(res.stdout.strip().splitlines()[-1]))
    return out


def _stream(args: argparse.Namespace) -> int:
    import tempfile

    import freqkit
    from freqkit.analysis.stream import image_folder

    device = torch.device(args.device)
    names = [m.strip() for m in args.model.split(",") if m.strip()]
    counts = [int(v) for v in args.peaks.split(",")] if args.peaks else []
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        written = max([args.images, *counts])
        _write_images(tmp, written)
        print(f"wrote {written} images to a temporary folder in {time.perf_counter() - t0:.1f} s")
        runs: dict[str, Callable[[], object]] = {}
        for name in names:
            model = freqkit.models.create(name, img_size=args.img_size).to(device)
            ds = image_folder(tmp, model, args.img_size)
            loader = torch.utils.data.DataLoader(
                torch.utils.data.Subset(ds, range(args.images)),
                batch_size=args.batch,
                num_workers=args.workers,
                pin_memory=device.type == "cuda",
            )
            warm = next(iter(loader))[: min(4, args.batch)].to(device)
            with torch.no_grad():
                model(warm)
            freqkit.analyze(model, warm)  # warm-up: FFT plans, lazy imports

            def forward(model=model, loader=loader) -> None:
                with torch.no_grad():
                    for x in loader:
                        model(x.to(device, non_blocking=True))

            # the library call of `freqkit analyze MODEL --images DIR --no-attention` (report and method figures' data
            # included), over the baseline's loader
            runs[f"{name} forward"] = forward
            runs[f"{name} analyze"] = lambda model=model, loader=loader: freqkit.analyze(model, loader)
        wall: dict[str, list[float]] = {k: [] for k in runs}
        order = list(runs)
        for r in range(max(1, args.repeats)):
            # every repeat runs every model's pair back to back, the order reversed every other repeat
            for key in order if r % 2 == 0 else order[::-1]:
                wall[key].append(_timed(runs[key], device)[0])
        print(
            f"{args.images} images from a folder at {args.img_size or 'the data config'} px, batch {args.batch}, "
            f"{args.workers} workers, {device}, torch threads {torch.get_num_threads()}, load average "
            f"{load_average()}, {args.repeats} interleaved repeat(s) (median of same-repeat ratios)"
        )
        print(f"{'model':<26}{'forward s':>11}{'analyze s':>11}{'img/s':>8}{'ratio':>8}{'aim':>6}")
        ratios = {}
        for name in names:
            fw, an = wall[f"{name} forward"], wall[f"{name} analyze"]
            ratio = paired_ratio(an, fw)
            ratios[f"stream analyze/forward wall, {name}"] = ratio_entry(ratio, 2.0, "max")
            verdict = "ok" if ratio <= 2.0 else "MISSED"
            print(
                f"{name:<26}{statistics.median(fw):>11.2f}{statistics.median(an):>11.2f}"
                f"{args.images / statistics.median(an):>8.1f}{ratio:>7.2f}x{'2.0x':>6}  {verdict}"
            )
        peaks = _peaks(args, tmp, names[0]) if counts else []
    if peaks:
        key = "cuda_peak_mib" if device.type == "cuda" else "peak_rss_mib"
        print(f"peak memory of analyze over the first n images, {names[0]}, each in a fresh process (aim: within 10 %)")
        print(
            f"{'images':>7}{'peak RSS MiB':>14}{'growth MiB':>12}{'vs first':>10}"
            + ("  CUDA peak MiB" if key != "peak_rss_mib" else "")
        )
        for p in peaks:
            change = p[key] / peaks[0][key] - 1
            line = f"{p['images']:>7}{p['peak_rss_mib']:>14.0f}{p['peak_rss_mib'] - p['rss_before_mib']:>12.0f}{change:>+10.1%}"
            print(line + (f"{p['cuda_peak_mib']:>15.0f}" if "cuda_peak_mib" in p else ""))
            if p is not peaks[0]:
                ratios[f"stream peak memory change {p['images']} vs {peaks[0]['images']} images"] = ratio_entry(
                    abs(change), 0.10, "max"
                )
    rows = [dict(run=k, wall_s=v, wall_median_s=statistics.median(v)) for k, v in wall.items()]
    rows += [dict(run="peak", model=names[0], **p) for p in peaks]
    write_json(args.json, "analyze", args, rows, ratios, device)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model", default="deit_small_patch16_224", help="model name; --stream takes a comma-separated list, timed side by side"
    )
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds after one warm-up; the median is reported")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: leave torch's default)")
    parser.add_argument(
        "--stream", action="store_true", help="streaming mode: --images images from a folder through a DataLoader"
    )
    parser.add_argument("--images", type=int, default=512, help="images timed in --stream (default 512)")
    parser.add_argument(
        "--peaks",
        default="24,96,384,768,1536",
        help="--stream: image counts whose peak memory is measured, each in a fresh process ('' for none)",
    )
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
