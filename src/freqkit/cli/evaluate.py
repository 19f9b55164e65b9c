"""``freqkit eval``: :func:`freqkit.evaluate_run` on the command line.

    freqkit eval freqkit-run                        # the run folder of freqkit train (model.safetensors + config.json)
    freqkit eval freqkit-run --data pairs:imgs:masks
    freqkit eval weights.safetensors --model vit_mini+fdam --data shapes
    freqkit eval upernet-run --data ade20k:/data/ade --save-predictions preds/   # one PNG per image, ADE20K labels
"""
from __future__ import annotations

import argparse


def add_parser(subparsers, name: str) -> argparse.ArgumentParser:
    """Register ``freqkit eval``."""
    from freqkit.train.config import TrainConfig

    fields = TrainConfig.__dataclass_fields__
    p = subparsers.add_parser(
        name,
        help="evaluate a trained model (top-1, or mIoU / boundary F1 / pixel accuracy)",
        description="Evaluate a model written by freqkit train (a run folder, its checkpoint/ folder, or a .safetensors "
        "file) on the validation split of --data (default: the data it was trained on).",
    )
    p.add_argument("path", help="run folder, checkpoint folder or .safetensors weights")
    p.add_argument("--data", default=None, help=fields["data"].metadata["help"] + " (default: the training data)")
    p.add_argument("--model", default=None, help=fields["model"].metadata["help"] + " (needed only for weights without a config)")
    p.add_argument("--task", choices=("classification", "segmentation"), default=None, help="needed only with --model")
    p.add_argument("--img-size", type=int, default=None, help="image size (default: the training size)")
    p.add_argument("--batch-size", type=int, default=32, help="images per batch (default 32)")
    p.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None, help="bf16 autocast (default: on for CUDA)")
    p.add_argument("--device", default="auto", help="cpu, cuda, ... (default: cuda if available)")
    p.add_argument("--eval-mode", choices=("whole", "slide"), default=None, help=fields["eval_mode"].metadata["help"] + " (default: the run's)")
    p.add_argument("--eval-flip", action=argparse.BooleanOptionalAction, default=None, help=fields["eval_flip"].metadata["help"] + " (default: the run's)")
    p.add_argument("--eval-scales", default=None, help=fields["eval_scales"].metadata["help"])
    p.add_argument("--save-predictions", default=None, metavar="DIR",
                   help="write one PNG label map per validation image at its original size, in the dataset's raw labels "
                   "(ADE20K: class + 1), the format benchmark servers take")
    p.add_argument("--json", default=None, help="also write the metrics to this JSON file")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
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
    res = evaluate_run(args.path, args.data, model=args.model, task=args.task, img_size=args.img_size,
                       batch_size=args.batch_size, amp=args.amp, device=args.device, progress=args.progress,
                       eval_mode=args.eval_mode, eval_flip=args.eval_flip, eval_scales=args.eval_scales,
                       save_predictions=args.save_predictions)
    if int(os.environ.get("RANK", "0")) == 0:
        metrics = {k: v for k, v in res.items() if k not in ("model", "data", "images")}
        print(f"{res['model']} on {res['data']} (val, {res['images']} images): {format_metrics(metrics)}")
        if args.save_predictions:
            print(f"wrote {res['images']} label maps to {args.save_predictions}/")
        if args.json:
            atomic_write_json(args.json, res)
    return 0
