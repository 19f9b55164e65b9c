"""``freqkit compare``: :func:`freqkit.compare` on the command line.

    freqkit compare                                         # vit_mini vs vit_mini+fdam on shapes, 1 seed
    freqkit compare --models vit_mini,vit_mini+fdam,vit_mini+attnscale --seeds 3 --out cmp/

Writes OUT/report.html (metrics with mean and spread over seeds next to per-layer spectral curves),
OUT/results.json (every number), OUT/analysis/ (the full analyze report of the first seed's models)
and OUT/runs/<model>/seed<k>/ (each run's weights and logs).
"""
from __future__ import annotations

import argparse

from freqkit.cli._config import add_dataclass_arguments, dataclass_kwargs

_OWN = ("model", "data", "steps", "seed", "out", "resume", "overwrite", "global_batch_size", "recipe")  # recipes are for freqkit train


def add_parser(subparsers, name: str) -> argparse.ArgumentParser:
    """Register ``freqkit compare``."""
    from freqkit.experiment.compare import DEFAULT_MODELS, DEFAULT_STEPS
    from freqkit.train.config import TrainConfig

    p = subparsers.add_parser(
        name,
        help="train, evaluate and diagnose several models; one HTML report",
        description="Train each model of --models on --data for --steps (every seed of --seeds), evaluate it, run "
        "freqkit.analyze on it, and write OUT/report.html: metrics (mean and spread over seeds) next to per-layer "
        "spectral curves. Defaults: vit_mini vs vit_mini+fdam on shapes segmentation, a few minutes on 2 CPU cores.",
    )
    model_help = TrainConfig.__dataclass_fields__["model"].metadata["help"]
    data_help = TrainConfig.__dataclass_fields__["data"].metadata["help"]
    p.add_argument("--models", default=",".join(DEFAULT_MODELS),
                   help=f"comma-separated model specs, each a {model_help} (default {','.join(DEFAULT_MODELS)})")
    p.add_argument("--data", default="shapes", help=f"{data_help} (default: shapes)")
    p.add_argument("--steps", type=int, default=DEFAULT_STEPS, help=f"optimizer steps per run (default {DEFAULT_STEPS})")
    p.add_argument("--seeds", default="1", help="number of seeds N (seeds 0..N-1) or a comma list such as 0,5,7 (default 1)")
    p.add_argument("--out", default="freqkit-compare", help="output folder (default freqkit-compare)")
    p.add_argument("--analyze-images", type=int, default=16, help="validation images fed to freqkit.analyze (default 16)")
    p.add_argument("--keep-checkpoints", action="store_true", help="keep each run's resumable checkpoint/ folder")
    p.add_argument("--resume", action="store_true",
                   help="reuse finished runs of the same settings found in OUT/runs (and continue checkpointed ones)")
    add_dataclass_arguments(p, TrainConfig, exclude=_OWN)
    p.set_defaults(run=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Compare, save the report, print the table."""
    from freqkit.experiment.compare import compare
    from freqkit.train.config import TrainConfig

    result = compare(
        [m for m in args.models.split(",")], data=args.data, steps=args.steps, seeds=args.seeds, out=args.out,
        resume=args.resume, analyze_images=args.analyze_images, keep_checkpoints=args.keep_checkpoints,
        **dataclass_kwargs(args, TrainConfig, exclude=_OWN),
    )
    print(result.table())
    print(f"wrote {args.out}/report.html ({result.settings['total_seconds']:.0f} s)")
    return 0
