"""AdamW parameter groups (weight decay, layer-wise lr decay, FreqScale lr multiplier) and lr schedules.

The schedule is a pure function of the step (:func:`lr_factor`), applied to every group's
``base_lr`` before each optimizer step, so resuming needs only the step count.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from freqkit.errors import FreqkitError

__all__ = ["param_groups", "build_optimizer", "lr_factor", "set_lr", "layer_ids", "SCHEDULES"]

SCHEDULES = ("cosine", "poly", "constant")


def layer_ids(model: nn.Module) -> tuple[dict[str, int], int]:
    """(parameter name -> depth, deepest depth) from the first module's timm ``group_matcher``; ({}, 0) if none has one.

    Depths follow timm's ``param_groups_layer_decay``: the matcher's groups in order (stem 0, then each
    block or stage), unmatched parameters (a classifier head) last. Parameters outside the matched backbone
    (a segmentation neck and head) are not in the map: :func:`param_groups` puts them one level deeper.
    """
    from timm.models import group_parameters

    for prefix, module in model.named_modules():
        matcher = getattr(module, "group_matcher", None)
        if callable(matcher):
            ids = group_parameters(module, matcher(coarse=False), reverse=True)
            pre = f"{prefix}." if prefix else ""
            return {pre + n: i for n, i in ids.items()}, max(ids.values(), default=0)
    return {}, 0


def _no_decay_names(model: nn.Module) -> set[str]:
    names: set[str] = set()
    for prefix, module in model.named_modules():
        fn = getattr(module, "no_weight_decay", None)
        if callable(fn):
            names |= {f"{prefix}.{n}" if prefix else n for n in fn()}
    return names


def param_groups(
    model: nn.Module, lr: float, weight_decay: float, layer_decay: float = 1.0, freq_lr_mult: float = 1.0
) -> list[dict]:
    """AdamW groups: no decay for 1-D tensors and ``no_weight_decay()`` names; lr x layer_decay^(deepest - depth)
    with depths from the model's timm ``group_matcher`` (:func:`layer_ids`); lr x ``freq_lr_mult`` for parameters
    named ``*freq_scale*``.

    Each group carries ``base_lr`` (its peak lr) and ``name`` (for logs).
    """
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    depths, deepest = layer_ids(model) if layer_decay != 1.0 else ({}, 0)
    if layer_decay != 1.0 and not depths:
        raise FreqkitError(
            f"layer_decay {layer_decay} needs a model whose backbone defines timm's group_matcher "
            f"({type(model).__name__} has none); use layer_decay 1.0"
        )
    if depths and any(n not in depths for n, _ in named):
        # a decode head sits above the whole backbone, as in mmsegmentation's layer-decay constructor
        deepest += 1
    skip = _no_decay_names(model)
    groups: dict[tuple, dict] = {}
    for name, p in named:
        decay = 0.0 if (p.ndim <= 1 or name in skip or name.endswith(".bias")) else weight_decay
        depth = depths.get(name, deepest)
        scale = layer_decay ** (deepest - depth)
        freq = "freq_scale" in name
        if freq:
            scale *= freq_lr_mult
        key = (decay, depth, freq)
        if key not in groups:
            groups[key] = {
                "params": [],
                "weight_decay": decay,
                "base_lr": lr * scale,
                "lr": lr * scale,
                "name": f"layer{depth}{'_freq' if freq else ''}{'_decay' if decay else '_nodecay'}",
            }
        groups[key]["params"].append(p)
    return [groups[k] for k in sorted(groups)]


def build_optimizer(model: nn.Module, lr: float, weight_decay: float = 0.05, layer_decay: float = 1.0, freq_lr_mult: float = 1.0,
                    betas: tuple[float, float] = (0.9, 0.999)) -> torch.optim.AdamW:
    """AdamW over :func:`param_groups`."""
    if lr <= 0:
        raise FreqkitError(f"learning rate must be positive, got {lr}")
    return torch.optim.AdamW(param_groups(model, lr, weight_decay, layer_decay, freq_lr_mult), lr=lr, betas=betas)


def lr_factor(step: int, total: int, warmup: int, schedule: str = "cosine", min_ratio: float = 0.0, power: float = 1.0,
              warmup_start: float | None = None) -> float:
    """Multiplier of the peak lr at ``step`` (0-based): linear warmup over ``warmup`` steps, then cosine / poly / constant to ``min_ratio``.

    The warmup is (step + 1) / warmup, or with ``warmup_start`` r: r + (1 - r) step / warmup (mmengine's LinearLR
    with start_factor r, e.g. 1e-6).
    """
    # kept instead of timm.scheduler: timm's warmup is warmup_lr_init + t (lr - init) / warmup_t, which cannot give the
    # default (step + 1) / warmup, and its stateful step_update would have to be replayed on resume
    if schedule not in SCHEDULES:
        raise FreqkitError(f"unknown schedule {schedule!r}; choose from {', '.join(SCHEDULES)}")
    if warmup > 0 and step < warmup:
        if warmup_start is not None:
            return warmup_start + (1.0 - warmup_start) * step / warmup
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    span = max(1, total - warmup)
    t = min(1.0, max(0.0, (step - warmup) / span))
    if schedule == "cosine":
        shape = 0.5 * (1.0 + math.cos(math.pi * t))
    else:
        shape = (1.0 - t) ** power
    return min_ratio + (1.0 - min_ratio) * shape


def set_lr(optimizer: torch.optim.Optimizer, factor: float) -> None:
    """Set every group's lr to its ``base_lr`` times ``factor``."""
    for g in optimizer.param_groups:
        g["lr"] = g["base_lr"] * factor
