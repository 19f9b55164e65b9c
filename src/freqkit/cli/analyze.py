"""``freqkit analyze``: parse the flags, call :func:`freqkit.analyze`, save and print the report.

A flag's destination is the library parameter it sets, and a flag left out is not passed, so every default
lives once, in ``freqkit.analyze``'s signature. torch is imported inside :func:`run` only (``--help`` stays instant).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from freqkit.cli._config import _FLAGS

EXAMPLES = """examples:
  freqkit analyze                                   # deit_tiny, random init, built-in images
  freqkit analyze vit_mini+fdam --img-size 64
  freqkit analyze deit_small_patch16_224 --pretrained --images ./imagenet/val --attention --max-images 5000
  freqkit analyze vit_tiny_patch16_224 deit_tiny_patch16_224 --checkpoint a.safetensors b.safetensors
  torchrun --nproc_per_node 8 -m freqkit analyze vit_base_patch16_224 --pretrained --images ./val --resume
"""
DEFAULT_MODEL = "deit_tiny_patch16_224"
_CLI_ONLY = ("models", "out", "figures", "quiet")  # the other destinations are keyword arguments of freqkit.analyze
_BOOL = dict(action=argparse.BooleanOptionalAction, default=None)


def add_parser(subparsers: Any, name: str = "analyze") -> argparse.ArgumentParser:
    """Register the ``analyze`` subcommand."""
    p = subparsers.add_parser(
        name,
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        help="per-layer spectral diagnostics of models over a dataset (report.json, report.html, figures)",
        description="Per-layer spectral diagnostics (high-frequency ratio, relative log amplitude, effective rank, token "
        "similarity, CKA, attention responses and per-head maps, effective receptive fields) of timm / freqkit models "
        "or specs (vit_mini+fdam), streamed over a folder of images; under torchrun the images are sharded over the "
        "processes. Options left out take freqkit.analyze's defaults.",
    )
    p.add_argument("models", nargs="*", metavar="MODEL", help=f"timm / freqkit model names or specs (default: {DEFAULT_MODEL})")
    p.add_argument(
        "--images",
        dest="data",
        default="builtin",
        metavar="DIR",
        help="folder of images, searched recursively (annotations/ "
        "and masks/ skipped), or 'builtin' for scikit-image's shipped photographs (default)",
    )
    p.add_argument(
        "--max-images", dest="max_images", type=int, metavar="N", help="analyse at most the first N images (default: all)"
    )
    p.add_argument(
        "--checkpoint",
        nargs="+",
        metavar="PATH",
        help="one .safetensors / weights-only .pth per model, in the order of the models",
    )
    p.add_argument(
        "--pretrained", action="store_true", default=None, help="timm's pretrained weights (cached, or with network access)"
    )
    p.add_argument(
        "--img-size",
        dest="img_size",
        nargs="+",
        type=int,
        metavar="N",
        help="H W (or N for N x N); default: each model's timm data config",
    )
    p.add_argument("--batch-size", dest="batch_size", type=int, metavar="N", help="images per forward pass and process")
    p.add_argument(
        "--workers",
        dest="num_workers",
        type=int,
        default=min(4, os.cpu_count() or 1),
        metavar="N",
        help="DataLoader worker processes reading the images (default: min(4, CPUs))",
    )
    p.add_argument(
        "--device", default="auto", help="cpu, cuda, cuda:1, ... (default auto: this process's GPU when available, else cpu)"
    )
    p.add_argument(
        "--attention",
        **_BOOL,
        help="attention responses and per-head maps (slower); default: on only for the demo without models",
    )
    p.add_argument(
        "--erf",
        **_BOOL,
        help="effective receptive fields of 4 layers (a backward pass per layer and batch); default: as --attention",
    )
    p.add_argument("--cka", **_BOOL, help="linear CKA matrices")
    p.add_argument("--cutoff", type=float, help="normalized radius above which energy counts as high frequency")
    p.add_argument("--bins", type=int, help="rings of the radial profiles")
    p.add_argument("--save-every", dest="save_every", type=int, metavar="K", help="save the running statistics every K batches")
    p.add_argument(
        "--resume", action="store_true", default=None, help="continue an interrupted run from the statistics saved in DIR/state/"
    )
    p.add_argument("--out", default="freqkit-report", metavar="DIR", help="output folder (default freqkit-report/)")
    p.add_argument(
        "--figures", action=argparse.BooleanOptionalAction, default=True, help="report.html and figures/*.png besides report.json"
    )
    p.add_argument(
        "--check-headers",
        dest="check_headers",
        **_BOOL,
        help="read every image's header before the first batch, so a bad "
        "file fails at once (default on; --no-check-headers for huge folders)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar and no table")
    flags = {a.dest: a.option_strings[0] for a in p._actions if a.option_strings and a.dest != "help"}
    p.set_defaults(run=run, **{_FLAGS: flags})
    return p


def _library_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    kwargs = {
        k: v for k, v in vars(args).items() if not k.startswith("_") and k not in (*_CLI_ONLY, "run", "command") and v is not None
    }
    if "img_size" in kwargs and len(kwargs["img_size"]) <= 2:
        kwargs["img_size"] = tuple(kwargs["img_size"]) * (3 - len(kwargs["img_size"]))  # N -> (N, N)
    demo = not args.models
    kwargs.setdefault("attention", demo)
    kwargs.setdefault("erf", kwargs["attention"])
    return kwargs


def run(args: argparse.Namespace) -> int:
    """freqkit.analyze with the typed options, then Report.save and a summary on rank 0."""
    from freqkit.analysis import analyze
    from freqkit.analysis.malloc import fix_malloc_thresholds
    from freqkit.io import check_writable_dir

    out = check_writable_dir(Path(args.out), "out")
    # this process is ours: fixed malloc thresholds keep a long stream's peak memory flat (freqkit.analysis.malloc)
    fix_malloc_thresholds()
    loud = not args.quiet and int(os.environ.get("RANK", "0")) == 0
    report = analyze(args.models or [DEFAULT_MODEL], **_library_kwargs(args), progress=loud, state_dir=out / "state")
    if int(os.environ.get("RANK", "0")) != 0:
        return 0
    paths = report.save(out, figures=args.figures)
    if loud:
        s = report.settings
        where = "built-in scikit-image photographs" if args.data == "builtin" else f"folder {args.data}"
        print(f"freqkit analyze: {where} on {s.get('device')}" + (f", {s['processes']} processes" if s["processes"] > 1 else ""))
        for m in report.models:
            print(f"  {m.name}: {m.info['weights']}")
        if any(m.info["weights"].startswith("random") for m in report.models):
            print("  note: weights are RANDOM (untrained); pass --pretrained or --checkpoint for a trained model")
        print(f"analysed {s['num_images']} images ({s['images']}) at {s['image_size'][0]}x{s['image_size'][1]}")
        print(report.table(), end="")
        wrote = (
            f"{paths['json']}, {paths['html']} and {len(paths['figures'])} figures in {out / 'figures'}"
            if args.figures
            else paths["json"]
        )
        print(f"wrote {wrote}")
    return 0
