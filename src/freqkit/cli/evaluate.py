"""``freqkit eval``: evaluate a trained model on a dataset's validation split.

    freqkit eval freqkit-run                        # the run folder of freqkit train (model.safetensors + config.json)
    freqkit eval freqkit-run --data pairs:imgs:masks
    freqkit eval weights.safetensors --model vit_mini+fdam --data shapes
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_parser(subparsers, name: str) -> argparse.ArgumentParser:
    """Register ``freqkit eval``."""
    from freqkit.cli.train import DATA_HELP, MODEL_HELP

    p = subparsers.add_parser(
        name,
        help="evaluate a trained model (top-1, or mIoU / boundary F1 / pixel accuracy)",
        description="Evaluate a model written by freqkit train (a run folder, its checkpoint/ folder, or a .safetensors "
        "file) on the validation split of --data (default: the data it was trained on).",
    )
    p.add_argument("path", help="run folder, checkpoint folder or .safetensors weights")
    p.add_argument("--data", default=None, help=DATA_HELP + " (default: the training data)")
    p.add_argument("--model", default=None, help=MODEL_HELP + " (needed only for weights without a config)")
    p.add_argument("--task", choices=("classification", "segmentation"), default=None, help="needed only with --model")
    p.add_argument("--img-size", type=int, default=None, help="image size (default: the training size)")
    p.add_argument("--batch-size", type=int, default=32, help="images per batch (default 32)")
    amp = p.add_mutually_exclusive_group()
    amp.add_argument("--amp", dest="amp", action="store_true", default=None, help="bf16 autocast (default: on for CUDA)")
    amp.add_argument("--no-amp", dest="amp", action="store_false", help="float32 throughout")
    p.add_argument("--device", default="auto", help="cpu, cuda, ... (default: cuda if available)")
    p.add_argument("--json", default=None, help="also write the metrics to this JSON file")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    p.set_defaults(run=run)
    return p


def _read_config(path: Path, model: str | None) -> tuple[dict, Path]:
    """(training config dict, weights file) for a run folder, a checkpoint folder or a weights file."""
    from freqkit.errors import FreqkitError
    from freqkit.io import read_json

    if path.is_dir():
        weights = path / "model.safetensors"
        if (path / "config.json").is_file():
            cfg = read_json(path / "config.json", "training config")
        elif (path / "state.json").is_file():
            state = read_json(path / "state.json", "checkpoint state")
            cfg = state.get("config", {}) if isinstance(state, dict) else None
        elif model is None:
            raise FreqkitError(f"{path} has no config.json or state.json; pass a folder written by freqkit train, or --model")
        else:
            cfg = {}
        if not weights.is_file():
            raise FreqkitError(f"{path} has no model.safetensors; pass a folder written by freqkit train (it may still be training)")
        if not isinstance(cfg, dict):
            raise FreqkitError(f"the training config in {path} is not a JSON object; it is damaged: pass --model and --data")
        return cfg, weights
    if not path.is_file():
        raise FreqkitError(f"{path} does not exist; pass a run folder, a checkpoint folder or a .safetensors file")
    cfg: dict = {}
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(path), "pt") as fh:
                meta = fh.metadata() or {}
        except Exception as err:  # safetensors raises its own error types
            raise FreqkitError(f"{path} is not a readable safetensors file ({err}); pass weights written by freqkit train") from None
        if "config" in meta:
            try:
                cfg = json.loads(meta["config"])
            except ValueError:
                raise FreqkitError(f"{path} carries a malformed training config in its metadata; pass --model and --data") from None
    if not cfg and (path.parent / "config.json").is_file():
        cfg = read_json(path.parent / "config.json", "training config")
    if not isinstance(cfg, dict):
        raise FreqkitError(f"the training config of {path} is not a JSON object; it is damaged: pass --model and --data")
    if not cfg and model is None:
        raise FreqkitError(f"{path} carries no training config; pass --model SPEC (and --data) to say what it is")
    return cfg, path


def run(args: argparse.Namespace) -> int:
    """Evaluate and print the metrics."""
    from freqkit.cli.train import format_metrics
    from freqkit.data import build_datasets
    from freqkit.errors import FreqkitError
    from freqkit.models.checkpoint import load_checkpoint
    from freqkit.train.distributed import cleanup_distributed, init_distributed, is_main
    from freqkit.train.loop import amp_enabled, evaluate
    from freqkit.train.models import build_model, parse_model_spec

    from freqkit.io import atomic_write_json, check_writable_file

    if args.json:
        check_writable_file(args.json, "json")  # before the evaluation, not after it
    if args.batch_size < 1:
        raise FreqkitError(f"batch_size must be >= 1, got {args.batch_size}")
    cfg, weights = _read_config(Path(args.path), args.model)
    model_spec = args.model or cfg.get("model")
    data = args.data or cfg.get("data")
    if not model_spec:
        raise FreqkitError(f"the training config of {args.path} names no model; pass --model SPEC")
    if data is None:
        raise FreqkitError("no --data given and the weights carry no training config; pass --data")
    parse_model_spec(model_spec)
    # a different dataset keeps the model's class count (checked against the data) and input size
    num_classes = cfg.get("num_classes")
    img_size = args.img_size or cfg.get("img_size")
    task = args.task or cfg.get("task")
    info = init_distributed(args.device)
    try:
        splits, data_info = build_datasets(data, task=task, img_size=img_size, num_classes=num_classes, splits=("val",))
        model = build_model(model_spec, data_info.task, data_info.num_classes, data_info.img_size,
                            head_channels=int(cfg.get("head_channels", 64)))
        load_checkpoint(model, str(weights))
        model.to(info.device)
        metrics = evaluate(model, splits["val"], data_info.task, data_info.num_classes, info.device, args.batch_size,
                           amp_enabled(args.amp, info.device), info, progress=args.progress)
    finally:
        cleanup_distributed(info)
    if is_main(info):
        print(f"{model_spec} on {data} (val, {len(splits['val'])} images): {format_metrics(metrics)}")
        if args.json:
            atomic_write_json(args.json, {"model": model_spec, "data": data, **metrics})
    return 0
