"""``freqkit train``: :func:`freqkit.train` on the command line (flags generated from :class:`freqkit.TrainConfig`).

freqkit train --model vit_mini+fdam --data shapes --steps 300
freqkit train --recipe upernet_deit3_base_fdam_ade20k_160k --data ade20k:/data/ade --init deit_3_base_224_21k.pth --print-config
freqkit train --recipe upernet_deit_small_ade20k_160k --data ade20k:/data/ade --init scratch   # random weights, on purpose
torchrun --nproc_per_node 8 -m freqkit train --model deit_small_fdam_patch16_224 --data ade20k:/data/ADE --batch-size 2
"""

from __future__ import annotations

import argparse
import json
import os

from freqkit.cli._config import add_dataclass_arguments, dataclass_kwargs, given_fields


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
    # recipe < typed flags: the generated flags record which fields were typed (given_fields)
    add_dataclass_arguments(p, TrainConfig, exclude=("global_batch_size",))
    p.add_argument(
        "--print-config",
        action="store_true",
        help="print the fully resolved configuration as JSON and exit (with "
        "--recipe: also the release config it follows, the weights it starts from and the paper's mIoU)",
    )
    p.set_defaults(run=run)
    return p


def resolve(args: argparse.Namespace):
    """The TrainConfig of parsed ``freqkit train`` flags: dataclass defaults < --recipe values < flags given."""
    from freqkit.train.config import TrainConfig, resolve_config

    typed = given_fields(args)
    values = dataclass_kwargs(args, TrainConfig)
    recipe = values.get("recipe")
    given = {k: v for k, v in values.items() if recipe is None or k in typed}
    given.pop("recipe", None)
    if "batch_size" in given and "global_batch" not in given:
        given["global_batch"] = None  # a per-process batch typed on the command line replaces a recipe's global batch
    return resolve_config(recipe, **given) if recipe is not None else TrainConfig(**given).validate()


def run(args: argparse.Namespace) -> int:
    """Train and print the final metrics (rank 0 only)."""
    from freqkit.experiment.reporting import format_metrics
    from freqkit.models.spec import parse_model_spec
    from freqkit.train.loop import train

    cfg = resolve(args)
    parse_model_spec(cfg.model)  # bad names fail before any data is read
    if args.print_config:
        if int(os.environ.get("RANK", "0")) == 0:
            shown = cfg.per_process(int(os.environ.get("WORLD_SIZE", "1"))).to_dict()
            shown["warmup_steps"] = cfg.warmup
            if cfg.recipe is not None:
                from freqkit.train.recipes import recipe_release

                # what the recipe reproduces, beyond the fields: release config, weights, backbone, the paper's mIoU
                shown["recipe_release"] = recipe_release(cfg.recipe)
            print(json.dumps(shown, indent=1))
        return 0
    result = train(cfg)
    if int(os.environ.get("RANK", "0")) == 0:
        if result.metrics:
            print(f"{cfg.model} step {result.steps_done}: {format_metrics(result.metrics)}")
        else:
            print(f"{cfg.model}: stopped at step {result.steps_done}; continue with --resume")
        print(f"wrote {result.out}/ ({result.seconds:.1f} s, {result.seconds_per_step * 1000:.0f} ms/step)")
    return 0
