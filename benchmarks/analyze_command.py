"""Whole commands side by side: ``freqkit analyze MODEL --images DIR`` against a plain timm forward over DIR.

    python -m benchmarks.analyze_command                                   # deit_tiny and deit_small, 256 images
    python -m benchmarks.analyze_command --models deit_small_patch16_224 --images 512 --repeats 3

Each repeat runs, in fresh processes and in alternating order, (1) the plain command: import torch and
timm, ``timm.create_model(MODEL)``, read the folder with timm's eval transform through a DataLoader
(``--batch``, ``--workers``) and run ``model(x)`` under ``torch.inference_mode`` on every batch, and (2)
``freqkit analyze MODEL --images DIR --max-images N --no-attention`` (report.json, report.html and the
figures written). The table gives each command's median wall time, its peak resident memory (the
largest of the process and its DataLoader workers, from ``os.wait4``) and the median of same-repeat ratios (aim: at most 2x).
Both start from random weights: nothing is downloaded.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

from benchmarks._common import add_common_args, load_average, paired_ratio, ratio_entry, write_json


def _plain(args: argparse.Namespace) -> int:
    """Child: the plain forward command over the first --max-images of --folder."""
    from pathlib import Path

    import timm
    import torch
    from PIL import Image
    from timm.data import create_transform, resolve_data_config

    model = timm.create_model(args.plain, pretrained=False).eval()
    transform = create_transform(**resolve_data_config({}, model=model))
    files = sorted(Path(args.folder).glob("*.jpg"))[: args.max_images]

    class Folder(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return len(files)

        def __getitem__(self, i: int) -> torch.Tensor:
            with Image.open(files[i]) as im:
                return transform(im.convert("RGB"))

    loader = torch.utils.data.DataLoader(Folder(), batch_size=args.batch, num_workers=args.workers)
    with torch.inference_mode():
        for x in loader:
            model(x)
    return 0


def _run(cmd: list[str]) -> tuple[float, float]:
    """(wall seconds, peak RSS MiB) of ``python -m CMD`` in a fresh process (os.wait4: its own rusage)."""
    with tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", *cmd], stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            err.seek(0)
            raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{err.read().decode()[-2000:]}")
    return wall, usage.ru_maxrss / 1024.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="deit_tiny_patch16_224,deit_small_patch16_224")
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2, help="interleaved rounds; the median is reported")
    parser.add_argument("--plain", default="", help=argparse.SUPPRESS)  # child: the plain forward command
    parser.add_argument("--folder", default="", help=argparse.SUPPRESS)
    parser.add_argument("--max-images", type=int, default=0, help=argparse.SUPPRESS)
    add_common_args(parser)
    args = parser.parse_args(argv)
    if args.plain:
        return _plain(args)
    from benchmarks.analyze import _write_images

    names = [m.strip() for m in args.models.split(",") if m.strip()]
    rows, ratios = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = f"{tmp}/images"
        os.makedirs(folder)
        _write_images(folder, args.images)
        common = ["--batch", str(args.batch), "--workers", str(args.workers)]
        print(
            f"{args.images} images, batch {args.batch}, {args.workers} workers, load average {load_average()}, "
            f"{args.repeats} interleaved repeat(s)"
        )
        print(f"{'model':<26}{'plain s':>9}{'analyze s':>11}{'plain MiB':>11}{'analyze MiB':>13}{'ratio':>8}{'aim':>6}")
        for name in names:
            plain = ["benchmarks.analyze_command", "--plain", name, "--folder", folder, "--max-images", str(args.images)]
            plain += common
            analyze = ["freqkit", "analyze", name, "--images", folder, "--max-images", str(args.images), "--no-attention"]
            analyze += ["--batch-size", str(args.batch), "--workers", str(args.workers), "--out", f"{tmp}/report"]
            analyze += ["--quiet", "--no-check-headers"]
            times: dict[str, list[tuple[float, float]]] = {"plain": [], "analyze": []}
            for r in range(max(1, args.repeats)):
                for key in ("plain", "analyze") if r % 2 == 0 else ("analyze", "plain"):
                    times[key].append(_run(plain if key == "plain" else analyze))
            pw, aw = [t for t, _ in times["plain"]], [t for t, _ in times["analyze"]]
            pm, am = max(m for _, m in times["plain"]), max(m for _, m in times["analyze"])
            ratio = paired_ratio(aw, pw)
            ratios[f"analyze/plain forward command, {name}"] = ratio_entry(ratio, 2.0, "max")
            print(
                f"{name:<26}{statistics.median(pw):>9.1f}{statistics.median(aw):>11.1f}{pm:>11.0f}{am:>13.0f}"
                f"{ratio:>7.2f}x{'2.0x':>6}  {'ok' if ratio <= 2.0 else 'MISSED'}"
            )
            rows.append(dict(model=name, plain_s=pw, analyze_s=aw, plain_peak_mib=pm, analyze_peak_mib=am))
    write_json(args.json, "analyze_command", args, rows, ratios, None)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
