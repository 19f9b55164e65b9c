"""What the DeiT-shaped families (FDAM ViTs, the anti-oversmoothing ViTs) share: their pretrained config and timm build call."""

from __future__ import annotations

from typing import Any, Callable

from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import build_model_with_cfg
from torch import nn

__all__ = ["deit_cfg", "build_deit"]


def deit_cfg(**kwargs: Any) -> dict[str, Any]:
    """timm pretrained config of a DeiT-style ViT at 224, ``kwargs`` overriding; no URL: weights come from a local file
    (``pretrained_cfg_overlay=dict(file=...)``)."""
    return {
        "url": "",
        "num_classes": 1000,
        "input_size": (3, 224, 224),
        "pool_size": None,
        "crop_pct": 0.875,
        "interpolation": "bicubic",
        "fixed_input_size": True,
        "mean": IMAGENET_DEFAULT_MEAN,
        "std": IMAGENET_DEFAULT_STD,
        "first_conv": "patch_embed.proj",
        "classifier": "head",
        **kwargs,
    }


def build_deit(
    build: Callable[..., nn.Module], variant: str, pretrained: bool, filter_fn: Callable, out_indices: Any, **kwargs: Any
) -> nn.Module:
    """timm's ``build_model_with_cfg`` with ``filter_fn`` loading checkpoints and getter-style features at ``out_indices``."""
    return build_model_with_cfg(
        build,
        variant,
        pretrained,
        pretrained_filter_fn=filter_fn,
        feature_cfg=dict(out_indices=out_indices, feature_cls="getter"),
        **kwargs,
    )
