"""Named training recipes: the FDAM paper's ADE20K UPerNet runs as :class:`TrainConfig` values.

Each recipe sets what the authors' released mmsegmentation config sets (``FDAM_mmseg/configs/vit/`` of
Linwei-Chen/FDAM and its ``_base_`` chain, mmsegmentation 0.25 / mmcv 1.5), setting by setting; the
fidelity table in ``docs/recipes.md`` lists each one with its source and every difference kept.

Shared by the four: AdamW (lr 6e-5, betas 0.9 / 0.999), linear warmup over 1,500 iterations from 1e-6
of the lr multiplying a poly (power 1) decay to 0 over all 160,000 iterations (mmcv's schedule), a
global batch of 16, fp32, 512 x 512 crops of the paper pipeline, UPerHead (512 channels, SyncBN,
dropout 0.1) and an auxiliary FCN head (256 channels, loss weight 0.4) on the last feature level, the
loss averaged over all pixels (ignored ones count, as mmsegmentation 0.x), whole-image evaluation
rescaled to fit (2048, 512). They differ in the backbone, the neck, the drop-path schedule and the
optimizer's parameter rules:

* DeiT-S (``upernet_deit-s16_512x512_160k_ade20k.py``): timm DeiT-S with its CLS token and a position
  embedding learned at 32 x 32; no neck (four stride-16 maps), drop path 0 -> 0.1 linearly, weight
  decay 0.01 on every parameter but the position embedding and CLS token, no layer-wise decay.
* DeiT-S + FDAM: no released config. freqkit's choice: the DeiT-S model, neck and data settings with
  FDAM in every block, and the optimizer rules of the released FDAM config (below).
* DeiT-III-B, with and without FDAM (``upernet_deit3-b16_512x512_160k_ade20k[_freq].py``): the released
  dense backbone (no CLS token, LayerScale, a 32 x 32 position embedding resized to each input), the
  released ``SimpleMultiLevelNeck`` (strides 4-32, SyncBN), drop path 0.15 in every block, layer-wise
  decay 0.95, no decay for 1-D tensors, biases and the position embedding; weight decay 0.05 (baseline)
  or 0.01 with FreqScale at 2x lr (FDAM).

Every recipe starts from ImageNet weights in the paper: ``init`` is required (a file, or ``'scratch'``
on purpose), checked by :func:`check_init` before any data is read.

``freqkit.train.config.resolve_config("upernet_deit_small_fdam_ade20k_160k", data="ade20k:/data/ade",
init="deit_small.pth")``: the recipe with overrides; ``freqkit train --recipe NAME`` does the same with
command-line flags. This module holds values only (it imports no other part of freqkit's training code
but the error type).
"""

from __future__ import annotations

from typing import Any

from freqkit.errors import ParameterError

__all__ = ["RECIPES", "RELEASE", "ADE20K_UPERNET_160K", "recipe_values", "recipe_release", "check_init"]

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
    schedule="poly",
    min_lr_ratio=0.0,
    warmup_steps=1500,
    warmup_start_ratio=1e-6,
    warmup_style="mmcv",
    clip_grad=None,
    amp=False,
    crop_size=512,
    img_scale="2048,512",
    head_channels=512,
    head_norm="batch",
    head_init="mmseg",
    head_dropout=0.1,
    aux_channels=256,
    aux_level=3,
    aux_weight=0.4,
    loss_mean="all",
    eval_mode="whole",
    eval_flip=False,
    eval_scales=None,
    eval_batch_size=1,
    eval_every=16_000,
    ckpt_every=16_000,
    log_every=50,
    num_workers=4,
)

# mmsegmentation's DeiT-S UPerNet (the 42.9 baseline): mmcv's default optimizer constructor
_DEIT_S = dict(
    neck="none",
    drop_path=0.1,
    drop_path_schedule="linear",
    weight_decay=0.01,
    wd_exempt="embed",
    layer_decay=1.0,
    freq_lr_mult=1.0,
)
# the released DeiT-III-B configs: the layer-decay constructor, the dense backbone and SimpleMultiLevelNeck
_DEIT3_B = dict(neck="simple", drop_path=0.15, drop_path_schedule="uniform", wd_exempt="norm_bias_embed", layer_decay=0.95)

RECIPES: dict[str, dict[str, Any]] = {
    "upernet_deit_small_ade20k_160k": {**ADE20K_UPERNET_160K, **_DEIT_S, "model": "deit_small_patch16_224"},
    "upernet_deit_small_fdam_ade20k_160k": {
        **ADE20K_UPERNET_160K,
        **_DEIT_S,
        "model": "deit_small_fdam_patch16_224",
        # no release: the optimizer rules of the released FDAM config
        "wd_exempt": "norm_bias_embed",
        "layer_decay": 0.95,
        "freq_lr_mult": 2.0,
    },
    # freq_lr_mult 10: the released baseline config's value; the baseline has no FreqScale parameter, so it changes nothing
    "upernet_deit3_base_ade20k_160k": {
        **ADE20K_UPERNET_160K,
        **_DEIT3_B,
        "model": "deit3_base_dense",
        "weight_decay": 0.05,
        "freq_lr_mult": 10.0,
    },
    "upernet_deit3_base_fdam_ade20k_160k": {
        **ADE20K_UPERNET_160K,
        **_DEIT3_B,
        "model": "fdam_vit_base_dense",
        "weight_decay": 0.01,
        "freq_lr_mult": 2.0,
    },
}

_RELEASE_DIR = "Linwei-Chen/FDAM: FDAM_mmseg/configs/vit/"
_DEIT_S_WEIGHTS = dict(
    file="deit_small_patch16_224-cd65a155.pth",
    weights="DeiT-S ImageNet-1k",
    source="the DeiT release, https://dl.fbaipublicfiles.com/deit/deit_small_patch16_224-cd65a155.pth",
)
_DEIT3_B_WEIGHTS = dict(
    file="deit_3_base_224_21k.pth",
    weights="DeiT-III-B ImageNet-21k",
    source="the DeiT III release, https://dl.fbaipublicfiles.com/deit/deit_3_base_224_21k.pth",
)
_DEIT_S_BACKBONE = (
    "timm DeiT-S: CLS token, position embedding learned at 32 x 32 (+ CLS), resized bicubically to other grids; "
    "outputs of blocks 2, 5, 8, 11, no final norm"
)
_DEIT3_BACKBONE = (
    "the released dense backbone (fdam_vit_base_dense{}): no CLS token, LayerScale, position embedding learned at "
    "32 x 32 and resized bicubically to each input; outputs of blocks 2, 5, 8, 11, no final norm"
)

# what each recipe reproduces: the release's config, the weights it starts from, the paper's mIoU (ADE20K val, single scale)
RELEASE: dict[str, dict[str, Any]] = {
    "upernet_deit_small_ade20k_160k": dict(
        config=_RELEASE_DIR + "upernet_deit-s16_512x512_160k_ade20k.py (neck=None, as mmsegmentation's own copy; the release "
        "comments it out, which leaves a 768-channel neck on 384-channel features)",
        pretrained=_DEIT_S_WEIGHTS,
        backbone=_DEIT_S_BACKBONE,
        paper_miou=42.9,
    ),
    "upernet_deit_small_fdam_ade20k_160k": dict(
        config="none released: the DeiT-S baseline's settings with FDAM in every block and the released FDAM config's "
        "optimizer rules (layer decay 0.95, no decay for 1-D tensors and biases, FreqScale at 2x lr) - freqkit's choice",
        pretrained=_DEIT_S_WEIGHTS,
        backbone=_DEIT_S_BACKBONE + "; AttInv + FreqScale in every block",
        paper_miou=44.3,
    ),
    "upernet_deit3_base_ade20k_160k": dict(
        config=_RELEASE_DIR + "upernet_deit3-b16_512x512_160k_ade20k.py (its backbone type 'vit_models' is not in the "
        "release; read as vit_models_freq without FDAM)",
        pretrained=_DEIT3_B_WEIGHTS,
        backbone=_DEIT3_BACKBONE.format(", fdam=False: preset deit3_base_dense"),
        paper_miou=51.8,
    ),
    "upernet_deit3_base_fdam_ade20k_160k": dict(
        config=_RELEASE_DIR + "upernet_deit3-b16_512x512_160k_ade20k_freq.py",
        pretrained=_DEIT3_B_WEIGHTS,
        backbone=_DEIT3_BACKBONE.format("") + "; AttInv + FreqScale in every block",
        paper_miou=52.6,
    ),
}


def recipe_values(name: str) -> dict[str, Any]:
    """The TrainConfig fields recipe ``name`` sets (a copy), with ``recipe`` = name."""
    if name not in RECIPES:
        raise ParameterError("recipe", f"{name!r} is unknown; use one of {', '.join(RECIPES)}")
    return {**RECIPES[name], "recipe": name, "out": name}


def recipe_release(name: str) -> dict[str, Any]:
    """What recipe ``name`` reproduces (a copy): release config, expected weights, backbone, the paper's mIoU."""
    recipe_values(name)  # a clear error for unknown names
    info = RELEASE[name]
    return {**info, "pretrained": dict(info["pretrained"])}


def check_init(cfg: Any) -> None:
    """Raise a ParameterError (one line) when ``cfg`` (a TrainConfig: its ``recipe`` and ``init``) follows a recipe but
    says nothing about its starting weights."""
    if cfg.recipe is None or cfg.init is not None or cfg.recipe not in RELEASE:
        return
    w = RELEASE[cfg.recipe]["pretrained"]
    raise ParameterError(
        "init",
        f"is required by recipe {cfg.recipe}, which starts from {w['weights']} weights: pass the file {w['file']} "
        f"(from {w['source']}) or 'scratch' to train from random weights on purpose",
    )
