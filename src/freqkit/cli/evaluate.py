"""``freqkit eval``: :func:`freqkit.evaluate_run` on the command line (flags generated from its signature).

freqkit eval freqkit-run                        # the run folder of freqkit train (model.safetensors + config.json)
freqkit eval freqkit-run --data pairs:imgs:masks
freqkit eval weights.safetensors --model vit_mini+fdam --data shapes
freqkit eval upernet-run --data ade20k:/data/ade --save-predictions preds/   # one PNG per image, ADE20K labels
"""

from __future__ import annotations

import argparse

from freqkit.cli._config import add_signature_arguments, flags_of


def add_parser(subparsers, name: str) -> argparse.ArgumentParser:
    """Register ``freqkit eval``."""
    from freqkit.experiment.runs import EVALUATE_HELP, evaluate_run

    p = subparsers.add_parser(
        name,
        help="evaluate a trained model (top-1, or mIoU / boundary F1 / pixel accuracy)",
        description="Evaluate a model written by freqkit train (a run folder, its checkpoint/ folder, or a .safetensors "
        "file) on the validation split of --data (default: the data it was trained on).",
    )
    p.add_argument("path", help="run folder, checkpoint folder or .safetensors weights")
    add_signature_arguments(p, evaluate_run, EVALUATE_HELP, defaults={"progress": True})
    p.add_argument("--json", default=None, help="also write the metrics to this JSON file")
    p.set_defaults(run=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Evaluate and print the metrics (rank 0 only); write them as JSON if asked."""
    import os

    from freqkit.experiment.reporting import format_metrics
    from freqkit.experiment.runs import evaluate_run
    from freqkit.io import atomic_write_json, check_writable_file

    if args.json is not None:
        check_writable_file(args.json, "json")  # before the evaluation, not after it
    res = evaluate_run(args.path, **{k: getattr(args, k) for k in flags_of(args)})
    if int(os.environ.get("RANK", "0")) == 0:
        metrics = {k: v for k, v in res.items() if k not in ("model", "data", "images")}
        print(f"{res['model']} on {res['data']} (val, {res['images']} images): {format_metrics(metrics)}")
        if args.save_predictions:
            print(f"wrote {res['images']} label maps to {args.save_predictions}/")
        if args.json:
            atomic_write_json(args.json, res)
    return 0
