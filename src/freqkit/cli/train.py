"""``freqkit train``: :func:`freqkit.train` on the command line (flags generated from :class:`freqkit.TrainConfig`).

    freqkit train --model vit_mini+fdam --data shapes --steps 300
    torchrun --nproc_per_node 8 -m freqkit train --model deit_small_fdam_patch16_224 --data ade20k:/data/ADE --batch-size 2
"""
from __future__ import annotations

import argparse
import os

from freqkit.cli._config import add_dataclass_arguments, dataclass_kwargs


def add_parser(subparsers, name: str) -> argparse.ArgumentParser:
    """Register ``freqkit train``."""
    from freqkit.train.config import TrainConfig

    p = subparsers.add_parser(
        name,
        help="train one model on a dataset (single process or torchrun DDP)",
        description="Train one model (AdamW, warmup + cosine/poly, optional layer-wise lr decay, bf16 autocast, "
        "gradient clipping) and evaluate it. Writes OUT/model.safetensors, config.json, metrics.json, log.jsonl and "
        "OUT/checkpoint/ (exact resume with --resume). Runs unchanged under torchrun --nproc_per_node N -m freqkit train.",
    )
    add_dataclass_arguments(p, TrainConfig, exclude=("global_batch_size",))
    p.set_defaults(run=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Train and print the final metrics (rank 0 only)."""
    from freqkit.experiment.compare import format_metrics
    from freqkit.train import TrainConfig
    from freqkit.train.loop import train
    from freqkit.train.models import parse_model_spec

    cfg = TrainConfig(**dataclass_kwargs(args, TrainConfig)).validate()
    parse_model_spec(cfg.model)  # bad names fail before any data is read
    result = train(cfg)
    if int(os.environ.get("RANK", "0")) == 0:
        if result.metrics:
            print(f"{cfg.model} step {result.steps_done}: {format_metrics(result.metrics)}")
        else:
            print(f"{cfg.model}: stopped at step {result.steps_done}; continue with --resume")
        print(f"wrote {result.out}/ ({result.seconds:.1f} s, {result.seconds_per_step * 1000:.0f} ms/step)")
    return 0
