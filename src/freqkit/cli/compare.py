"""``freqkit compare``: :func:`freqkit.compare` on the command line (flags from its signature and from TrainConfig).

    freqkit compare                                         # vit_mini vs vit_mini+fdam on shapes, 1 seed
    freqkit compare --models vit_mini,vit_mini+fdam,vit_mini+attnscale --seeds 3 --out cmp/
    torchrun --nproc-per-node 2 -m freqkit compare --seeds 3 --out cmp/   # the runs spread over 2 processes

Writes OUT/report.html (metrics with mean and spread over seeds next to per-layer spectral curves),
OUT/results.json (every number), OUT/analysis/ (the full analyze report of the first seed's models)
and OUT/runs/<model>/seed<k>/ (each run's weights and logs).
"""

from __future__ import annotations

import argparse

from freqkit.cli._config import add_dataclass_arguments, add_signature_arguments, dataclass_kwargs

_OWN = (
    "model",
    "data",
    "steps",
    "seed",
    "out",
    "resume",
    "overwrite",
    "global_batch_size",
    "recipe",
)  # recipes are for freqkit train
_CLI_DEFAULTS = {"seeds": "1", "out": "freqkit-compare"}  # one seed; a folder, since the command line keeps its report


def add_parser(subparsers, name: str) -> argparse.ArgumentParser:
    """Register ``freqkit compare``."""
    from freqkit.experiment.compare import COMPARE_HELP, DEFAULT_MODELS, compare
    from freqkit.train.config import TrainConfig

    p = subparsers.add_parser(
        name,
        help="train, evaluate and diagnose several models; one HTML report",
        description="Train each model of --models on --data for --steps (every seed of --seeds), evaluate it, run "
        "freqkit.analyze on it, and write OUT/report.html: metrics (mean and spread over seeds) next to per-layer "
        "spectral curves. Defaults: vit_mini vs vit_mini+fdam on shapes segmentation, a few minutes on 2 CPU cores.",
    )
    add_signature_arguments(p, compare, COMPARE_HELP, defaults={"models": ",".join(DEFAULT_MODELS), **_CLI_DEFAULTS})
    add_dataclass_arguments(p, TrainConfig, exclude=_OWN)
    p.set_defaults(run=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Compare, save the report, print the table (rank 0 under torchrun)."""
    from freqkit.distributed import torchrun_world
    from freqkit.experiment.compare import COMPARE_HELP, compare
    from freqkit.train.config import TrainConfig

    result = compare(**{k: getattr(args, k) for k in COMPARE_HELP}, **dataclass_kwargs(args, TrainConfig, exclude=_OWN))
    if torchrun_world()[0] != 0:
        return 0
    print(result.table())
    print(f"wrote {args.out}/report.html ({result.settings['total_seconds']:.0f} s)")
    return 0
