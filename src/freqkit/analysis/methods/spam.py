"""SPAM figures: SPANet's fixed spectral masks and SPANetV2's learned spectral gains per stage.

Tap: a forward pre-hook on each SPAM / SPAMv2 mixer records the grid of its first call; the masks
(``SPAM.mask``) and gains (``SPAMv2.gains``) at that grid are then read from the module. The hook only reads.
"""

from __future__ import annotations

import re
from typing import Any, Optional

import torch
from torch import nn

from freqkit.analysis.methods._common import Images, check_images, hooked_forward, modules_of, to_list
from freqkit.spectral import full_plane

__all__ = ["spam_filters", "filters_result", "taps"]


def _spam_masks(module: nn.Module, size: tuple[int, int]) -> dict[str, Any]:
    """SPAM's fixed masks at grid ``size``, centred (branches, H, W), with their radius and lambdas."""
    masks = torch.stack([module.mask(size, i, shifted=True) for i in range(len(module.lambdas))])
    return {"masks": masks.float(), "radius": float(module.radius), "lambdas": [float(v) for v in module.lambdas]}


def _spamv2_gains(module: nn.Module, size: tuple[int, int]) -> tuple[torch.Tensor, str]:
    """SPAMv2's applied gains on the rfft2 half-plane, (scales, channels per scale, H, W // 2 + 1), and the gain kind."""
    gains = module.gains(size).float()
    n = int(module.num_scales)
    return gains.reshape(n, gains.shape[0] // n, *gains.shape[1:]), str(getattr(module, "gain", "sigmoid"))


def _mixer_grid(kind: str, x: torch.Tensor) -> tuple[int, int]:
    """Spatial size of a token mixer's input: SPAM takes (B, C, H, W), SPAMv2 channels-last (B, H, W, C)."""
    return (int(x.shape[-2]), int(x.shape[-1])) if kind == "spam" else (int(x.shape[1]), int(x.shape[2]))


def taps(model: nn.Module, sizes: dict) -> list:
    """Pre-hooks on SPAM / SPAMv2 mixers recording sizes[name] = (kind, (H, W)) of their first call."""
    handles = []
    for kind in ("spam", "spamv2"):
        for name, mod in modules_of(model, kind):

            def hook(m: nn.Module, args: tuple, name: str = name, kind: str = kind) -> None:
                if args and isinstance(args[0], torch.Tensor) and args[0].ndim == 4:
                    sizes.setdefault(name, (kind, _mixer_grid(kind, args[0])))

            handles.append(mod.register_forward_pre_hook(hook))
    return handles


def _stage_of(name: str) -> Optional[int]:
    m = re.search(r"(?:^|\.)stages\.(\d+)(?:\.|$)", name)
    return int(m.group(1)) if m else None


def spam_filters(model: nn.Module, images: Images) -> Optional[dict[str, Any]]:
    """SPANet's fixed SPF masks and SPANetV2's learned gains per stage, at the grids of images (B, 3, H, W); None without SPAM.

    "spam": per stage the centred (branches, h, w) masks (one per lambda), with the radius. "spamv2": per
    stage the centred full-plane (scales, h, w) gains as applied (after the sigmoid), each the mean over
    that scale's channels and over the stage's blocks.
    """
    check_images(images)
    sizes: dict = {}
    hooked_forward(model, images[:1], taps(model, sizes))
    return filters_result(model, sizes)


def filters_result(model: nn.Module, sizes: dict) -> Optional[dict[str, Any]]:
    if not sizes:
        return None
    modules = dict(model.named_modules())
    order = list(sizes)
    v1: dict[int, dict[str, Any]] = {}
    v2: dict[int, dict[str, Any]] = {}
    for pos, name in enumerate(order):
        kind, size = sizes[name]
        stage = _stage_of(name)
        stage = pos if stage is None else stage
        if kind == "spam":
            if stage not in v1:
                m = _spam_masks(modules[name], size)
                v1[stage] = {
                    "stage": stage,
                    "size": list(size),
                    "radius": m["radius"],
                    "lambdas": m["lambdas"],
                    "masks": to_list(m["masks"]),
                    "blocks": 0,
                }
            v1[stage]["blocks"] += 1
        else:
            gains, gain_kind = _spamv2_gains(modules[name], size)
            full = torch.fft.fftshift(full_plane(gains, size[1]), dim=(-2, -1)).mean(dim=1)  # (scales, h, w)
            rec = v2.setdefault(stage, {"stage": stage, "size": list(size), "gain": gain_kind, "sum": 0, "blocks": 0})
            rec["sum"] = rec["sum"] + full
            rec["blocks"] += 1
    for rec in v2.values():
        rec["gains"] = to_list(rec.pop("sum") / rec["blocks"])
    return {
        "spam": [v1[s] for s in sorted(v1)],
        "spamv2": [v2[s] for s in sorted(v2)],
        "definition": "spam: SPF masks M(k) (lambda inside |k| < r, 1/3 on |k| = r, 1 - lambda outside), centred; "
        "spamv2: applied gains sigmoid(theta) on the full centred plane, mean over each scale's channels and the stage's blocks",
    }
