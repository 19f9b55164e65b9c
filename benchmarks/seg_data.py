"""Throughput of the ADE20K training pipeline per DataLoader worker, and the workers one GPU needs.

    python -m benchmarks.seg_data                                  # 683 x 512 JPEGs, crop 512, per-GPU batch 4
    python -m benchmarks.seg_data --step-ms 300,500,800 --images 32
    python -m benchmarks.seg_data --measure-step --device cuda     # also time the recipe models' training step

A DataLoader worker is one process with one thread: each item is decoded (JPEG + PNG) and sent
through the paper pipeline (random rescale, cat_max_ratio crop, flip, photometric distortion, pad),
exactly as ``freqkit.data.ade20k_dataset(..., train=True)`` does. The table gives images per second
per worker (median over rounds) and, for each training-step time, the workers that keep one GPU fed:
ceil(per-GPU batch / step time / images per second per worker).

``--measure-step`` times one optimizer step of the recipe models (UPerNet + auxiliary head, BatchNorm,
forward + loss + backward + AdamW) at ``--crop`` with the per-GPU batch, in float32 and bf16, with the
peak memory, so the step time can come from the machine itself.
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def make_images(root: Path, n: int, size: tuple[int, int] = (683, 512), seed: int = 0) -> Path:
    """ADE20K-layout folder with ``n`` smooth random JPEGs of ``size`` (W, H) and blocky 150-class masks."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    w, h = size
    for sub in ("training", "validation"):
        (root / "images" / sub).mkdir(parents=True, exist_ok=True)
        (root / "annotations" / sub).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        small = rng.integers(0, 256, (h // 16 + 1, w // 16 + 1, 3), dtype=np.uint8)
        img = Image.fromarray(small).resize((w, h), resample=Image.BILINEAR)  # photo-like: compresses like real JPEGs
        img.save(root / "images" / "training" / f"ADE_train_{i:08d}.jpg", quality=90)
        lab = rng.integers(0, 151, (h // 32 + 1, w // 32 + 1), dtype=np.uint8)
        Image.fromarray(lab).resize((w, h), resample=Image.NEAREST).save(
            root / "annotations" / "training" / f"ADE_train_{i:08d}.png"
        )
    return root


def per_worker_rate(root: Path, crop: int, rounds: int) -> tuple[float, float]:
    """(pipeline images/s, decode-only images/s) of one single-threaded process, median over ``rounds`` passes."""
    from freqkit.data import ade20k_dataset
    from freqkit.data.folders import _open_mask, _open_rgb

    ds = ade20k_dataset(root, "train", train=True, crop_size=crop)
    torch.set_num_threads(1)  # a DataLoader worker runs one thread
    for i in range(min(2, len(ds))):
        ds[i]  # warm-up (imports, allocator)
    full, decode = [], []
    for r in range(rounds):
        ds.set_epoch(r)
        t = time.perf_counter()
        for i in range(len(ds)):
            ds[i]
        full.append(len(ds) / (time.perf_counter() - t))
        t = time.perf_counter()
        for img, mask in ds.pairs:
            _open_rgb(img)
            _open_mask(mask)
        decode.append(len(ds) / (time.perf_counter() - t))
    return statistics.median(full), statistics.median(decode)


def measure_step(models: list[str], crop: int, batch: int, device: str, steps: int) -> list[tuple[str, str, float, float]]:
    """(model, dtype, ms per step, peak GiB) of the recipe's training step for each model, float32 and bf16."""
    import torch.nn.functional as F

    from freqkit.models.spec import build_model
    from freqkit.train.optim import build_optimizer

    dev = torch.device(device)
    rows = []
    for spec in models:
        net = (
            build_model(spec, "segmentation", 150, crop, 0.1, 512, head_norm="batch", head_dropout=0.1, aux_channels=256)
            .to(dev)
            .train()
        )
        opt = build_optimizer(net, 6e-5, 0.01, 0.95, 2.0)
        x = torch.randn(batch, 3, crop, crop, device=dev)
        y = torch.randint(0, 150, (batch, crop, crop), device=dev)
        for amp in (False, True):
            if dev.type == "cuda":
                torch.cuda.reset_peak_memory_stats(dev)
            times = []
            for s in range(steps + 2):
                if dev.type == "cuda":
                    torch.cuda.synchronize(dev)
                t = time.perf_counter()
                with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
                    main, aux = net(x)
                loss = F.cross_entropy(main.float(), y, ignore_index=255) + 0.4 * F.cross_entropy(
                    aux.float(), y, ignore_index=255
                )
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                if dev.type == "cuda":
                    torch.cuda.synchronize(dev)
                if s >= 2:
                    times.append(time.perf_counter() - t)
            peak = torch.cuda.max_memory_allocated(dev) / 2**30 if dev.type == "cuda" else float("nan")
            rows.append((spec, "bf16" if amp else "float32", 1000 * statistics.median(times), peak))
        del net, opt
    return rows


def main(argv: list[str] | None = None) -> int:
    """Measure and print the tables."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=24, help="generated 683 x 512 JPEGs")
    p.add_argument("--crop", type=int, default=512)
    p.add_argument("--batch", type=int, default=4, help="images per GPU per step (recipe: 16 over 4 GPUs)")
    p.add_argument("--step-ms", default="250,400,600,1000", help="training-step times (ms) to size the workers for")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--measure-step", action="store_true", help="also time the recipe models' training step on --device")
    p.add_argument(
        "--models",
        default="deit_small_patch16_224,deit_small_fdam_patch16_224,deit3_base_patch16_224,deit3_base_patch16_224+fdam",
    )
    p.add_argument("--device", default="cuda")
    p.add_argument("--steps", type=int, default=10)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        root = make_images(Path(tmp), args.images)
        rate, decode = per_worker_rate(root, args.crop, args.rounds)
    print(f"pipeline (decode + rescale + crop + flip + photometric + pad), crop {args.crop}, 683x512 JPEG, 1 thread:")
    print(f"  {rate:.1f} images/s per worker (decode alone: {decode:.1f} images/s)")
    print(f"\n| step time (ms) | images/s one GPU needs (batch {args.batch}) | workers per GPU |")
    print("|---:|---:|---:|")
    for ms in (float(s) for s in args.step_ms.split(",") if s.strip()):
        need = args.batch / (ms / 1000)
        print(f"| {ms:.0f} | {need:.1f} | {math.ceil(need / rate)} |")
    if args.measure_step:
        rows = measure_step([m for m in args.models.split(",") if m], args.crop, args.batch, args.device, args.steps)
        print(f"\n| model | dtype | ms / step (batch {args.batch}, crop {args.crop}) | peak GiB | workers per GPU |")
        print("|---|---|---:|---:|---:|")
        for spec, dtype, ms, peak in rows:
            print(f"| {spec} | {dtype} | {ms:.1f} | {peak:.2f} | {math.ceil(args.batch / (ms / 1000) / rate)} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
