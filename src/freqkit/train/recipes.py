"""Named training recipes: the FDAM paper's ADE20K UPerNet runs as :class:`TrainConfig` values.

Each recipe is the released configuration (the standard mmsegmentation ADE20K schedule):
AdamW (lr 6e-5, betas 0.9 / 0.999, weight decay 0.01; none on 1-D parameters, position embedding
and cls token), linear warmup over 1,500 iterations from 1e-6 of the peak lr, then poly decay
(power 1) to 0; layer-wise lr decay 0.95 over the 12 blocks; ``freq_scale`` parameters at 2x lr;
160,000 iterations at a global batch of 16 (4 GPUs x 4); 512 x 512 crops of the paper pipeline;
UPerHead with 512 channels, BatchNorm (SyncBN under DDP) and dropout 0.1, plus an auxiliary FCN
head (256 channels, loss weight 0.4) on the third level; evaluation of whole images rescaled to
fit (2048, 512). Start the backbone from ImageNet weights with ``init``.

``freqkit.train.config.resolve_config("upernet_deit_small_fdam_ade20k_160k", data="ade20k:/data/ade")``: the
recipe with overrides; ``freqkit train --recipe NAME`` does the same with command-line flags. This module
holds values only (it imports no other part of freqkit's training code but the error type).
"""
from __future__ import annotations

from typing import Any

from freqkit.errors import ParameterError

__all__ = ["RECIPES", "ADE20K_UPERNET_160K", "recipe_values"]

# shared by the four ADE20K UPerNet recipes (FDAM paper, dense prediction protocol)
ADE20K_UPERNET_160K: dict[str, Any] = dict(
    data="ade20k:data/ade/ADEChallengeData2016",
    task="segmentation",
    num_classes=150,
    steps=160_000,
    global_batch=16,
    lr=6e-5,
    beta1=0.9,
    beta2=0.999,
    weight_decay=0.01,
    schedule="poly",
    min_lr_ratio=0.0,
    warmup_steps=1500,
    warmup_start_ratio=1e-6,
    layer_decay=0.95,
    freq_lr_mult=2.0,
    clip_grad=None,
    drop_path=0.1,
    crop_size=512,
    img_scale="2048,512",
    head_channels=512,
    head_norm="batch",
    head_dropout=0.1,
    aux_channels=256,
    aux_weight=0.4,
    eval_mode="whole",
    eval_flip=False,
    eval_scales=None,
    eval_batch_size=1,
    eval_every=16_000,
    ckpt_every=16_000,
    log_every=50,
    num_workers=4,
)

RECIPES: dict[str, dict[str, Any]] = {
    "upernet_deit_small_ade20k_160k": {**ADE20K_UPERNET_160K, "model": "deit_small_patch16_224"},
    "upernet_deit_small_fdam_ade20k_160k": {**ADE20K_UPERNET_160K, "model": "deit_small_fdam_patch16_224"},
    "upernet_deit3_base_ade20k_160k": {**ADE20K_UPERNET_160K, "model": "deit3_base_patch16_224"},
    "upernet_deit3_base_fdam_ade20k_160k": {**ADE20K_UPERNET_160K, "model": "deit3_base_patch16_224+fdam"},
}


def recipe_values(name: str) -> dict[str, Any]:
    """The TrainConfig fields recipe ``name`` sets (a copy), with ``recipe`` = name."""
    if name not in RECIPES:
        raise ParameterError("recipe", f"{name!r} is unknown; use one of {', '.join(RECIPES)}")
    return {**RECIPES[name], "recipe": name, "out": name}

