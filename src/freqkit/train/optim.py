"""AdamW parameter groups (weight decay, layer-wise lr decay, FreqScale lr multiplier) and lr schedules.

The schedule is a pure function of the step (:func:`lr_factor`), applied to every group's
``base_lr`` before each optimizer step, so resuming needs only the step count.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from freqkit.errors import FreqkitError

__all__ = ["param_groups", "build_optimizer", "lr_factor", "set_lr", "layer_ids", "SCHEDULES", "WD_EXEMPT", "WARMUP_STYLES"]

SCHEDULES = ("cosine", "poly", "constant")
# which parameters get no weight decay: 1-D tensors, biases and no_weight_decay() names (timm, the released
# layer-decay constructor), or only the embeddings (mmcv's default constructor on mmsegmentation's ViT, whose
# norm layers are named ln1 / ln2 / bn, so a 'norm' key exempts nothing)
WD_EXEMPT = ("norm_bias_embed", "embed")
# 'prefix': warmup, then the decay over the remaining steps (timm); 'mmcv': the decay spans the whole run from
# step 0 and the warmup multiplies it (mmcv 1.x LrUpdaterHook, the released configs)
WARMUP_STYLES = ("prefix", "mmcv")


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


# parameter names (last component) that wd_exempt='embed' exempts: what mmcv's custom keys pos_embed / cls_token match
_EMBED_NAMES = ("pos_embed", "cls_token", "dist_token", "reg_token")


def _no_decay_names(model: nn.Module) -> set[str]:
    names: set[str] = set()
    for prefix, module in model.named_modules():
        fn = getattr(module, "no_weight_decay", None)
        if callable(fn):
            names |= {f"{prefix}.{n}" if prefix else n for n in fn()}
    return names


def param_groups(
    model: nn.Module,
    lr: float,
    weight_decay: float,
    layer_decay: float = 1.0,
    freq_lr_mult: float = 1.0,
    wd_exempt: str = "norm_bias_embed",
) -> list[dict]:
    """AdamW groups: no decay for 1-D tensors, biases and ``no_weight_decay()`` names (``wd_exempt='embed'``: for the
    position embedding and class / distillation tokens only); lr x layer_decay^(deepest - depth)
    with depths from the model's timm ``group_matcher`` (:func:`layer_ids`); lr x ``freq_lr_mult`` for parameters
    named ``*freq_scale*``.

    Each group carries ``base_lr`` (its peak lr) and ``name`` (for logs).
    """
    if wd_exempt not in WD_EXEMPT:
        raise FreqkitError(f"unknown wd_exempt {wd_exempt!r}; use {' or '.join(WD_EXEMPT)}")
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
        if wd_exempt == "embed":
            exempt = name.rsplit(".", 1)[-1] in _EMBED_NAMES
        else:
            exempt = p.ndim <= 1 or name in skip or name.endswith(".bias")
        decay = 0.0 if exempt else weight_decay
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


def build_optimizer(
    model: nn.Module,
    lr: float,
    weight_decay: float = 0.05,
    layer_decay: float = 1.0,
    freq_lr_mult: float = 1.0,
    betas: tuple[float, float] = (0.9, 0.999),
    wd_exempt: str = "norm_bias_embed",
) -> torch.optim.AdamW:
    """AdamW over :func:`param_groups`."""
    if lr <= 0:
        raise FreqkitError(f"learning rate must be positive, got {lr}")
    return torch.optim.AdamW(param_groups(model, lr, weight_decay, layer_decay, freq_lr_mult, wd_exempt), lr=lr, betas=betas)


def lr_factor(
    step: int,
    total: int,
    warmup: int,
    schedule: str = "cosine",
    min_ratio: float = 0.0,
    power: float = 1.0,
    warmup_start: float | None = None,
    warmup_style: str = "prefix",
) -> float:
    """Multiplier of the peak lr at ``step`` (0-based): linear warmup over ``warmup`` steps, then cosine / poly / constant to ``min_ratio``.

    The warmup is (step + 1) / warmup, or with ``warmup_start`` r: r + (1 - r) step / warmup (mmcv's linear warmup
    with warmup_ratio r, e.g. 1e-6). ``warmup_style`` 'prefix': the decay runs over the steps after the warmup;
    'mmcv': the decay runs over all ``total`` steps from step 0 and the warmup multiplies it (mmcv 1.x).
    """
    # kept instead of timm.scheduler: timm's warmup is warmup_lr_init + t (lr - init) / warmup_t, which cannot give the
    # default (step + 1) / warmup, and its stateful step_update would have to be replayed on resume
    if schedule not in SCHEDULES:
        raise FreqkitError(f"unknown schedule {schedule!r}; choose from {', '.join(SCHEDULES)}")
    if warmup_style not in WARMUP_STYLES:
        raise FreqkitError(f"unknown warmup_style {warmup_style!r}; choose from {', '.join(WARMUP_STYLES)}")
    warm = 1.0
    if warmup > 0 and step < warmup:
        warm = warmup_start + (1.0 - warmup_start) * step / warmup if warmup_start is not None else (step + 1) / warmup
        if warmup_style == "prefix":
            return warm
    if schedule == "constant":
        return warm
    start = 0 if warmup_style == "mmcv" else warmup
    span = max(1, total - start)
    t = min(1.0, max(0.0, (step - start) / span))
    if schedule == "cosine":
        shape = 0.5 * (1.0 + math.cos(math.pi * t))
    else:
        shape = (1.0 - t) ** power
    return warm * (min_ratio + (1.0 - min_ratio) * shape)


def set_lr(optimizer: torch.optim.Optimizer, factor: float) -> None:
    """Set every group's lr to its ``base_lr`` times ``factor``."""
    for g in optimizer.param_groups:
        g["lr"] = g["base_lr"] * factor
