"""DeiT backbones with the anti-oversmoothing filters: AttnScale, FeatScale (Wang et al. 2022), GFSA (Choi et al. 2024).

Each model is timm's DeiT architecture converted with :func:`freqkit.convert`, so every timm DeiT
weight keeps its name and the method parameters start at the identity. Checkpoints load through
:func:`checkpoint_filter_fn`, which accepts plain timm / DeiT checkpoints (the method parameters
then keep their identity init) and the released checkpoints of both papers (``blocks.i.attn.lamb``
-> ``blocks.i.attn.filter.lamb``; ``blocks.i.lamb1`` / ``lamb2`` -> ``blocks.i.feat_scale.lamb1`` /
``lamb2``). Through timm: ``timm.create_model(name, pretrained=True,
pretrained_cfg_overlay=dict(file=PATH))``. Method options pass as ``<method>_<arg>``, e.g.
``gfsa_K=4`` or ``attnscale_include_prefix=False``.
"""

from __future__ import annotations

import re
from typing import Any

import torch
from timm.models import generate_default_cfgs, register_model
from timm.models.vision_transformer import VisionTransformer
from timm.models.vision_transformer import checkpoint_filter_fn as _timm_vit_filter
from torch import nn

from freqkit.models._deit import build_deit, deit_cfg
from freqkit.models.convert import convert

__all__ = ["checkpoint_filter_fn", "released_key"]

# a converted block's method parameters live under these module names
_METHOD_PARTS = (".attn.filter.", ".feat_scale.")

_RELEASED = (
    (re.compile(r"^(.*\battn\.)lamb$"), r"\1filter.lamb"),  # AttnScale w / GFSA wK, per head
    (re.compile(r"^(blocks\.\d+\.)lamb([12])$"), r"\1feat_scale.lamb\2"),  # FeatScale s_d / s_h, per channel
)


def released_key(key: str) -> str:
    """The freqkit name of a released AttnScale / FeatScale / GFSA checkpoint key (others pass unchanged)."""
    for pattern, repl in _RELEASED:
        if pattern.match(key):
            return pattern.sub(repl, key)
    return key


def checkpoint_filter_fn(state_dict: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """timm / DeiT / released anti-oversmoothing checkpoint -> this model's state dict.

    Runs timm's ViT filter (patch-embed and position-embedding resizing, ``gamma_`` layer scale),
    renames the released keys, and fills method parameters that the checkpoint lacks (a plain
    DeiT checkpoint) with the model's own identity-at-init values.
    """
    sd = _timm_vit_filter(state_dict, model, adapt_layer_scale=True)
    sd = {released_key(k): v for k, v in sd.items()}
    for key, value in model.state_dict().items():
        if key not in sd and any(part in f".{key}" for part in _METHOD_PARTS):
            sd[key] = value
    return sd


def _create_antismooth_vit(variant: str, method: str, pretrained: bool = False, **kwargs: Any) -> VisionTransformer:
    """Build timm's ViT with ``kwargs``, convert it with ``method`` (options ``<method>_<arg>``), load weights."""
    method_opts = {k: kwargs.pop(k) for k in list(kwargs) if k.startswith(f"{method}_")}
    out_indices = kwargs.pop("out_indices", 3)

    def build(**model_kwargs: Any) -> VisionTransformer:
        return convert(VisionTransformer(**model_kwargs), method, **method_opts)

    return build_deit(build, variant, pretrained, checkpoint_filter_fn, out_indices, **kwargs)


def _cfg() -> dict[str, Any]:
    return deit_cfg(license="apache-2.0")


default_cfgs = generate_default_cfgs(
    {
        "deit_small_attnscale_patch16_224": _cfg(),
        "deit_small_featscale_patch16_224": _cfg(),
        "deit_small_gfsa_patch16_224": _cfg(),
    }
)

_DEIT_SMALL = dict(patch_size=16, embed_dim=384, depth=12, num_heads=6)


@register_model
def deit_small_attnscale_patch16_224(pretrained: bool = False, **kwargs: Any) -> VisionTransformer:
    """DeiT-S/16 at 224 with AttnScale in every attention; (B, 3, 224, 224) -> (B, 1000)."""
    return _create_antismooth_vit("deit_small_attnscale_patch16_224", "attnscale", pretrained, **dict(_DEIT_SMALL, **kwargs))


@register_model
def deit_small_featscale_patch16_224(pretrained: bool = False, **kwargs: Any) -> VisionTransformer:
    """DeiT-S/16 at 224 with FeatScale on every attention branch; (B, 3, 224, 224) -> (B, 1000)."""
    return _create_antismooth_vit("deit_small_featscale_patch16_224", "featscale", pretrained, **dict(_DEIT_SMALL, **kwargs))


@register_model
def deit_small_gfsa_patch16_224(pretrained: bool = False, **kwargs: Any) -> VisionTransformer:
    """DeiT-S/16 at 224 with GFSA (K = 3) in every attention; (B, 3, 224, 224) -> (B, 1000)."""
    return _create_antismooth_vit("deit_small_gfsa_patch16_224", "gfsa", pretrained, **dict(_DEIT_SMALL, **kwargs))
