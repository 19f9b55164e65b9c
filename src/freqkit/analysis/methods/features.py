"""Feature-map figure: one layer's feature map and its log-amplitude spectrum per model (FDAM supplementary Fig. 9).

Read through the model's public ``forward_intermediates`` (no hooks).
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

import torch
from torch import nn

from freqkit.analysis.methods._common import Images, Models, check_images, device_dtype, display_images, eval_mode, named, to_list
from freqkit.errors import FreqkitError
from freqkit.spectral import spectrum

__all__ = ["features"]


def _feature_index(model: nn.Module) -> tuple[int, Optional[int]]:
    """(index for forward_intermediates, its stride): the deepest level of stride <= 16 (ViT blocks: the last block)."""
    info = getattr(model, "feature_info", None)
    if isinstance(info, (list, tuple)) and info and all(isinstance(d, dict) for d in info):
        best = None
        for i, d in enumerate(info):
            red = d.get("reduction")
            if red is not None and red <= 16:
                best = (i, int(red))
        if best is not None:
            return best
        return len(info) - 1, info[-1].get("reduction")
    return -1, None


def _feature_map(model: nn.Module, images: torch.Tensor, index: Optional[int]) -> tuple[torch.Tensor, int, Optional[int]]:
    """One level's feature maps (B, C, h, w) float32 via the model's ``forward_intermediates``."""
    fi = getattr(model, "forward_intermediates", None)
    if not callable(fi):
        raise FreqkitError(f"features: {type(model).__name__} has no forward_intermediates; pass a timm / freqkit backbone")
    auto, stride = _feature_index(model)
    idx = auto if index is None else int(index)
    device, dtype = device_dtype(model)
    with eval_mode(model), torch.no_grad():
        if idx < 0:
            maps = fi(images.to(device=device, dtype=dtype), indices=1, intermediates_only=True)
        else:
            maps = fi(images.to(device=device, dtype=dtype), indices=[idx], intermediates_only=True)
    m = maps[-1]
    if m.ndim != 4:
        raise FreqkitError(
            f"features: {type(model).__name__}.forward_intermediates gave shape {tuple(m.shape)}, expected (B, C, h, w)"
        )
    return m.float().cpu(), idx, stride if index is None else None


def features(
    models: Models,
    images: Images,
    *,
    display: Optional[Images] = None,
    num_images: int = 4,
    index: Optional[Mapping[str, int]] = None,
) -> Optional[dict[str, Any]]:
    """Per model, one layer's feature map reduced to (n, h, w) and its centred log-amplitude spectrum (n, h, w).

    The layer is the deepest level of stride <= 16 (a ViT's last block, a staged network's stride-16
    stage), or ``index[name]`` (a ``forward_intermediates`` index). Each image's map is divided by its
    RMS over channels and positions (so models of different feature scale share one colour scale).
    "map" is the channel-wise L2 norm per token divided by sqrt(C) (the token RMS): unlike a first
    principal component it has no sign ambiguity and no per-model basis, so maps of different models are
    comparable on one scale. "spectrum" is ``freqkit.spectral.spectrum`` of the normalized C-channel map
    (mean over channels of log |fftshift(fft2)|), i.e. of all channels, not of the reduced map.
    """
    check_images(images)
    k = int(num_images)
    out: dict[str, Any] = {"models": [], "layer": {}, "stride": {}, "map": {}, "spectrum": {}}
    for name, model in named(models):
        try:
            fmap, idx, stride = _feature_map(model, images[:k], (index or {}).get(name))
        except FreqkitError:
            continue
        rms = fmap.square().mean(dim=(1, 2, 3), keepdim=True).sqrt().clamp(min=1e-12)
        x = fmap / rms
        out["models"].append(name)
        out["layer"][name] = idx
        out["stride"][name] = stride
        out["map"][name] = to_list(x.square().mean(dim=1).sqrt())
        out["spectrum"][name] = to_list(torch.stack([spectrum(x[i : i + 1]) for i in range(x.shape[0])]))
    if not out["models"]:
        return None
    out["images"] = display_images(images, display, k)
    out["definition"] = (
        "map = token RMS over channels of the feature map divided by its RMS over the image; "
        "spectrum = mean over channels of log(|fftshift(fft2)| + 1e-6) of that normalized map"
    )
    return out
