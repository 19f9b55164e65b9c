"""``freqkit analyze``: per-layer spectral diagnostics of one or more models over a folder of images.

A thin wrapper: ``freqkit.models.create`` builds each model, ``freqkit.analyze`` streams the images
(sharded over ranks under torchrun, resumable) and ``Report.save`` writes ``report.json``,
``report.html`` and ``figures/*.png`` under ``--out``. Runs offline by default:
``deit_tiny_patch16_224`` at random init on scikit-image's shipped photographs. torch and timm are
imported inside :func:`run` only, so ``freqkit --help`` stays instant.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from freqkit.errors import FreqkitError

DEFAULT_MODEL = "deit_tiny_patch16_224"

EXAMPLES = """examples:
  freqkit analyze                                   # deit_tiny, random init, built-in images
  freqkit analyze deit_small_patch16_224 --pretrained --images ./imagenet/val --attention --max-images 5000
  freqkit analyze vit_tiny_patch16_224 deit_tiny_patch16_224 --checkpoint a.safetensors b.safetensors
  torchrun --nproc_per_node 8 -m freqkit analyze vit_base_patch16_224 --pretrained --images ./val --resume
"""

# library parameter -> command-line flag in error messages (the library names Python parameters);
# cli._config.error_line applies them, the one place where errors become command-line text
FLAG_PATTERNS = [
    (r"\bpretrained=False\b", "no --pretrained"),
    (r"\bpretrained=True\b", "--pretrained"),
    (r"\bcheckpoint=PATH both", "--checkpoint both"),
    (r"\bcheckpoint=", "--checkpoint "),
    (r"\bimg_size=\((\d+), (\d+)\)", r"--img-size \1 \2"),
    (r"\bimg_size\b", "--img-size"),
    (r"\bmax_images\b", "--max-images"),
    (r"\bbatch_size\b", "--batch-size"),
    (r"\bnum_workers\b", "--workers"),
    (r"\bsave_every\b", "--save-every"),
    (r"\bresume=False\b", "no --resume"),
    (r"\bresume=True\b", "--resume"),
    (r"\bdevice='cpu'", "--device cpu"),
    (r"(?<!-)\bdevice\b", "--device"),  # not the one just written as --device
]


def add_parser(subparsers: Any, name: str = "analyze") -> argparse.ArgumentParser:
    """Register the ``analyze`` subcommand."""
    p = subparsers.add_parser(
        name,
        help="per-layer spectral diagnostics of models over a dataset (report.json, report.html, figures)",
        description="Per-layer spectral diagnostics (high-frequency ratio, relative log amplitude, effective rank, "
        "token similarity, CKA, attention responses and per-head maps, effective receptive fields) of one or more "
        "timm / freqkit models, streamed over every image of a folder; under torchrun the images are sharded over the processes.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("models", nargs="*", metavar="MODEL", help=f"timm or freqkit model names (default: {DEFAULT_MODEL})")
    p.add_argument("--images", default="builtin", metavar="DIR", help="folder of images, searched recursively (ImageNet and ADE20K "
                   "layouts work; annotations/ and masks/ folders are skipped), or 'builtin' for scikit-image's shipped photographs (default)")
    p.add_argument("--max-images", type=int, default=None, metavar="N", help="analyse at most the first N images (default: all)")
    p.add_argument("--checkpoint", nargs="+", default=[], metavar="PATH",
                   help="one .safetensors / weights-only .pth per model, in the order of the models")
    p.add_argument("--pretrained", action="store_true", help="load timm's pretrained weights (needs them cached, or network access)")
    p.add_argument("--img-size", nargs="+", type=int, default=None, metavar="N",
                   help="image size H W (or one N for N x N); default: each model's timm data config (resize, centre crop)")
    p.add_argument("--batch-size", type=int, default=16, metavar="N", help="images per forward pass and process (default 16)")
    p.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1), metavar="N",
                   help="DataLoader worker processes reading the images (default: min(4, CPUs))")
    p.add_argument("--device", default="auto", help="torch device, e.g. cpu, cuda, cuda:1 (default: cuda when available, else cpu)")
    p.add_argument(
        "--attention",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="capture attention maps for the attention responses and per-head maps (slower); "
        "default: on for the built-in demo run without model names, off otherwise",
    )
    p.add_argument("--erf", action=argparse.BooleanOptionalAction, default=None,
                   help="effective receptive fields of 4 layers (one backward pass per layer and batch); default: as --attention")
    p.add_argument("--cka", action=argparse.BooleanOptionalAction, default=True, help="linear CKA matrices (default on)")
    p.add_argument("--cutoff", type=float, default=0.5, help="normalized radius above which energy counts as high frequency (default 0.5)")
    p.add_argument("--bins", type=int, default=16, help="rings of the radial profiles (default 16)")
    p.add_argument("--out", default="freqkit-report", metavar="DIR", help="output folder (default freqkit-report/)")
    p.add_argument("--figures", action=argparse.BooleanOptionalAction, default=True,
                   help="write report.html and figures/*.png besides report.json (default on)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run from the statistics saved in DIR/state/")
    p.add_argument("--save-every", type=int, default=50, metavar="K", help="save the running statistics every K batches (default 50)")
    p.add_argument("--check-headers", action=argparse.BooleanOptionalAction, default=True,
                   help="read every image's header before the first batch, so a bad file fails at once (default on; "
                   "--no-check-headers for huge folders)")
    p.add_argument("--quiet", action="store_true", help="no progress bar and no table")
    p.set_defaults(run=run, _flag_patterns=FLAG_PATTERNS)
    return p


def _image_size(values: list[int] | None) -> tuple[int, int] | None:
    if values is None:
        return None
    if len(values) not in (1, 2):
        raise FreqkitError(f"--img-size takes H W or one N, got {len(values)} numbers; e.g. --img-size 224 224")
    h, w = (values[0], values[0]) if len(values) == 1 else (values[0], values[1])
    from freqkit.data.spec import MAX_IMG_SIZE

    if not (1 <= h <= MAX_IMG_SIZE and 1 <= w <= MAX_IMG_SIZE):
        raise FreqkitError(f"--img-size {h} {w} must be in 1..{MAX_IMG_SIZE}; e.g. --img-size 224 224")
    return h, w


def run(args: argparse.Namespace) -> int:
    """Parse-level checks, then models.create + analyze + Report.save."""
    names = list(args.models) or [DEFAULT_MODEL]
    size = _image_size(args.img_size)
    checkpoints = list(args.checkpoint)
    if checkpoints and len(checkpoints) != len(names):
        raise FreqkitError(f"got {len(checkpoints)} --checkpoint files for {len(names)} models; pass one checkpoint per model, in the same order")
    demo = not args.models
    attention = args.attention if args.attention is not None else demo
    erf = args.erf if args.erf is not None else attention

    import torch

    from freqkit.analysis import analyze
    from freqkit.analysis.stream import rank_world, start_distributed, stop_distributed
    from freqkit.models import create

    from freqkit.io import check_writable_dir

    out = Path(args.out)
    check_writable_dir(out, "out")  # a file or a read-only folder fails now, not after the whole analysis
    device, started = start_distributed(args.device)
    failed = True
    try:
        rank, world = rank_world()
        loud = not args.quiet and rank == 0
        # random-init models (no --pretrained / --checkpoint) give the same report on every run and rank
        torch.manual_seed(0)
        models: dict[str, torch.nn.Module] = {}
        info: dict[str, dict[str, Any]] = {}
        for i, name in enumerate(names):
            ckpt = checkpoints[i] if checkpoints else None
            model = create(name, pretrained=args.pretrained, checkpoint=ckpt, img_size=size)
            weights = "pretrained (timm)" if args.pretrained else f"checkpoint {ckpt}" if ckpt else "random init (no pretrained weights)"
            key = name if name not in models else f"{name}-{i + 1}"
            models[key] = model.to(device)
            info[key] = {"model": name, "weights": weights}
        if loud:
            where = "built-in scikit-image photographs" if args.images == "builtin" else f"folder {args.images}"
            print(f"freqkit analyze: {where} on {device}" + (f", {world} processes" if world > 1 else ""))
            for key, meta in info.items():
                print(f"  {key}: {meta['weights']}")
            if any(meta["weights"].startswith("random") for meta in info.values()):
                print("  note: weights are RANDOM (untrained); pass --pretrained or --checkpoint for a trained model")
            sys.stdout.flush()
        report = analyze(
            models,
            args.images,
            attention=attention,
            erf=erf,
            cka=args.cka,
            cutoff=args.cutoff,
            bins=args.bins,
            batch_size=args.batch_size,
            num_workers=args.workers,
            max_images=args.max_images,
            img_size=size,
            progress=loud,
            state_dir=out / "state",
            save_every=args.save_every,
            resume=args.resume,
            info=info,
            settings={"device": str(device), "weights": {k: v["weights"] for k, v in info.items()}},
            check_headers=args.check_headers,
        )
        if rank == 0:
            try:
                paths = report.save(out, figures=args.figures)
            except OSError as err:
                raise FreqkitError(f"cannot write the report to {str(out)!r} ({err.strerror or err}); pass a writable --out DIR") from None
            if loud:
                s = report.settings
                print(f"analysed {s['num_images']} images ({s['images']}) at {s['image_size'][0]}x{s['image_size'][1]}")
                print(report.table(), end="")
                if args.figures:
                    print(f"wrote {paths['json']}, {paths['html']} and {len(paths['figures'])} figures in {out / 'figures'}")
                else:
                    print(f"wrote {paths['json']}")
        failed = False
    finally:
        stop_distributed(started, failed)
    return 0
