"""``freqkit train``: train one model (classification or segmentation), alone or under torchrun.

    freqkit train --model vit_mini+fdam --data shapes --steps 300
    torchrun --nproc_per_node 8 -m freqkit train --model deit_small_fdam --data ade20k:/data/ADE --batch-size 2
"""
from __future__ import annotations

import argparse

# kept here (not imported from freqkit.data) so that --help does not import torch
DATA_HELP = (
    "dataset: shapes[:size=64,train=2000,val=128,seed=0] | textures[:classes=6,size=64,...] | imagefolder:ROOT "
    "(ROOT/train/<class>/*, ROOT/val/<class>/*) | ade20k:ROOT (ADEChallengeData2016 layout) | pairs:IMAGES:MASKS "
    "(matched by file stem; train/ and val/ sub-folders, or every 10th pair held out)"
)
MODEL_HELP = (
    "model spec BASE[+METHOD...]: BASE is a preset (vit_mini: dim 128, depth 4, patch 8; vit_micro: dim 32) or a "
    "timm / freqkit model name; each +METHOD (fdam, attinv, freqscale, attnscale, featscale, gfsa) retrofits the "
    "ViT base with freqkit.convert, e.g. vit_mini+fdam"
)


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {v}")
    return v


def add_recipe_arguments(p: argparse.ArgumentParser, steps: int = 300) -> None:
    """Arguments shared by ``train`` and ``compare``: data, schedule, optimizer, precision, device."""
    p.add_argument("--data", default="shapes", help=DATA_HELP + " (default: shapes)")
    p.add_argument("--task", choices=("classification", "segmentation"), default=None, help="default: the dataset's task")
    p.add_argument("--img-size", type=_positive_int, default=None, help="square image size (default: the dataset's, 64 for built-ins)")
    p.add_argument("--num-classes", type=_positive_int, default=None, help="class count; checked against the data (pairs: default max label + 1)")
    p.add_argument("--steps", type=_positive_int, default=steps, help=f"optimizer steps (default {steps})")
    p.add_argument("--batch-size", type=_positive_int, default=16, help="images per process and step (default 16)")
    p.add_argument("--lr", type=float, default=1e-3, help="peak AdamW learning rate (default 1e-3)")
    p.add_argument("--weight-decay", type=float, default=0.05, help="AdamW weight decay, not applied to norms / biases / embeddings (default 0.05)")
    p.add_argument("--warmup-steps", type=int, default=None, help="linear warmup steps (default 5%% of --steps)")
    p.add_argument("--schedule", choices=("cosine", "poly", "constant"), default="cosine", help="lr decay after warmup (default cosine)")
    p.add_argument("--min-lr-ratio", type=float, default=0.01, help="final lr / peak lr (default 0.01)")
    p.add_argument("--layer-decay", type=float, default=1.0, help="layer-wise lr decay for ViT blocks, e.g. 0.65 for fine-tuning (default 1: off)")
    p.add_argument("--freq-lr-mult", type=float, default=1.0, help="lr multiplier of FreqScale parameters (names with 'freq_scale'; default 1)")
    p.add_argument("--clip-grad", type=float, default=1.0, help="gradient-norm clip; 0 turns it off (default 1.0)")
    p.add_argument("--drop-path", type=float, default=0.0, help="stochastic depth rate (default 0)")
    p.add_argument("--head-channels", type=_positive_int, default=64, help="UPerNet head width for segmentation (default 64)")
    amp = p.add_mutually_exclusive_group()
    amp.add_argument("--amp", dest="amp", action="store_true", default=None, help="bf16 autocast (default: on for CUDA with bf16, off on CPU)")
    amp.add_argument("--no-amp", dest="amp", action="store_false", help="float32 throughout")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    p.add_argument("--workers", type=int, default=0, help="DataLoader worker processes (default 0)")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")


def config_from_args(args: argparse.Namespace, model: str, seed: int, out: str):
    """A TrainConfig from parsed recipe arguments."""
    from freqkit.train.config import TrainConfig

    return TrainConfig(
        model=model, data=args.data, task=args.task, out=out, steps=args.steps, batch_size=args.batch_size,
        lr=args.lr, weight_decay=args.weight_decay, warmup_steps=args.warmup_steps, schedule=args.schedule,
        min_lr_ratio=args.min_lr_ratio, layer_decay=args.layer_decay, freq_lr_mult=args.freq_lr_mult,
        clip_grad=args.clip_grad or None, amp=args.amp, seed=seed, img_size=args.img_size, num_classes=args.num_classes,
        drop_path=args.drop_path, head_channels=args.head_channels, num_workers=args.workers, device=args.device,
        progress=args.progress,
        eval_every=getattr(args, "eval_every", 0), ckpt_every=getattr(args, "ckpt_every", 0),
        log_every=getattr(args, "log_every", 10), resume=getattr(args, "resume", False), stop_at=getattr(args, "stop_at", None),
    )


def add_parser(subparsers, name: str) -> argparse.ArgumentParser:
    """Register ``freqkit train``."""
    p = subparsers.add_parser(
        name,
        help="train one model on a dataset (single process or torchrun DDP)",
        description="Train one model (AdamW, warmup + cosine/poly, optional layer-wise lr decay, bf16 autocast, "
        "gradient clipping) and evaluate it. Writes OUT/model.safetensors, config.json, metrics.json, log.jsonl and "
        "OUT/checkpoint/ (exact resume with --resume). Runs unchanged under torchrun --nproc_per_node N -m freqkit train.",
    )
    p.add_argument("--model", default="vit_mini", help=MODEL_HELP + " (default vit_mini)")
    add_recipe_arguments(p)
    p.add_argument("--seed", type=int, default=0, help="seed of the initialization and the data order (default 0)")
    p.add_argument("--out", default="freqkit-run", help="output folder (default freqkit-run)")
    p.add_argument("--eval-every", type=int, default=0, help="evaluate every N steps (default: at the end)")
    p.add_argument("--ckpt-every", type=int, default=0, help="checkpoint every N steps (default: at the end)")
    p.add_argument("--log-every", type=int, default=10, help="JSON log line every N steps (default 10)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint if it exists (same settings)")
    p.add_argument("--stop-at", type=_positive_int, default=None, help="stop after this step with a checkpoint; finish later with --resume")
    p.set_defaults(run=run)
    return p


def format_metrics(metrics: dict) -> str:
    """'miou 0.412  boundary_f1 0.301 ...' with the headline metrics first."""
    order = ["top1", "miou", "boundary_f1", "pixel_acc", "loss"]
    keys = [k for k in order if k in metrics] + sorted(k for k in metrics if k not in order)
    return "  ".join(f"{k} {metrics[k]:.4f}" for k in keys)


def run(args: argparse.Namespace) -> int:
    """Train and print the final metrics (rank 0 only)."""
    from freqkit.train import train
    from freqkit.train.models import parse_model_spec

    parse_model_spec(args.model)  # bad names fail before any data is read
    result = train(config_from_args(args, args.model, args.seed, args.out))
    import os

    if int(os.environ.get("RANK", "0")) == 0:
        if result.metrics:
            print(f"{args.model} step {result.steps_done}: {format_metrics(result.metrics)}")
        else:
            print(f"{args.model}: stopped at step {result.steps_done}; continue with --resume")
        print(f"wrote {result.out}/ ({result.seconds:.1f} s, {result.seconds_per_step * 1000:.0f} ms/step)")
    return 0
