"""What the per-method modules share: the layer types they look for, image checks, eval-mode forwards, JSON-ready lists."""

from __future__ import annotations

import contextlib
import math
from typing import Any, Iterator, Mapping, Optional, Union

import torch
import torch.nn.functional as F
from torch import nn

from freqkit.errors import FreqkitError

Images = torch.Tensor
Models = Union[nn.Module, Mapping[str, nn.Module]]

# display copies of the input images kept in the data (for overlays) are at most this many pixels a side
_DISPLAY_MAX_SIDE = 160


def layer_types() -> dict[str, type]:
    from freqkit.layers.attinv import AttInv
    from freqkit.layers.freqscale import FreqScale
    from freqkit.layers.spam import SPAM
    from freqkit.layers.spam_v2 import SPAMv2

    return {"attinv": AttInv, "freqscale": FreqScale, "spam": SPAM, "spamv2": SPAMv2}


def named(models: Models) -> list[tuple[str, nn.Module]]:
    if isinstance(models, nn.Module):
        return [(type(models).__name__, models)]
    if isinstance(models, Mapping) and models and all(isinstance(m, nn.Module) for m in models.values()):
        return [(str(k), m) for k, m in models.items()]
    raise FreqkitError("models must be an nn.Module or a non-empty dict name -> nn.Module")


def check_images(images: torch.Tensor, name: str = "images") -> None:
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[0] < 1 or images.shape[1] != 3:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise FreqkitError(f"{name} must be a batch (B, 3, H, W) with B >= 1, got {shape}; add a batch dimension with x[None]")


def device_dtype(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    p = next(iter(model.parameters()), None)
    if p is None or not p.is_floating_point():
        return torch.device("cpu"), torch.float32
    return p.device, p.dtype


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    was = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was)


def forward(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    device, dtype = device_dtype(model)
    with eval_mode(model), torch.no_grad():
        return model(images.to(device=device, dtype=dtype))


def modules_of(model: nn.Module, kind: str) -> list[tuple[str, nn.Module]]:
    cls = layer_types()[kind]
    return [(n, m) for n, m in model.named_modules() if isinstance(m, cls)]


def token_grid(model: nn.Module, num_tokens: int, image_hw: tuple[int, int]) -> tuple[tuple[int, int], int]:
    """((H, W), prefix count) of a ViT token sequence of ``num_tokens`` tokens from images of size image_hw."""
    given = getattr(model, "num_prefix_tokens", None)
    candidates = [int(given)] if isinstance(given, int) else list(range(0, 9))
    ih, iw = image_hw
    for p in candidates:
        n = num_tokens - p
        if n <= 0:
            continue
        patch = math.sqrt(ih * iw / n)
        h, w = round(ih / patch), round(iw / patch)
        if h * w == n:
            return (h, w), p
    raise FreqkitError(
        f"attinv visualization: cannot lay {num_tokens} tokens out on a grid for {ih}x{iw} images; "
        "the model's patch grid does not match the image size"
    )


def to_list(t: torch.Tensor) -> Any:
    return t.detach().float().cpu().tolist()


def display_images(images: torch.Tensor, display: Optional[torch.Tensor], count: int) -> list:
    """Up to ``count`` images as uint8 (n, H', W', 3) lists, at most _DISPLAY_MAX_SIDE a side.

    ``display`` (B, 3, H, W) in [0, 1] is shown as given; without it each model input is min-max scaled.
    """
    src = display if display is not None else images
    check_images(src, "display" if display is not None else "images")
    x = src[:count].detach().float().cpu()
    if display is None:
        lo = x.amin(dim=(1, 2, 3), keepdim=True)
        hi = x.amax(dim=(1, 2, 3), keepdim=True)
        x = (x - lo) / (hi - lo).clamp(min=1e-12)
    h, w = x.shape[-2:]
    scale = _DISPLAY_MAX_SIDE / max(h, w)
    if scale < 1:
        x = F.interpolate(
            x, size=(max(1, round(h * scale)), max(1, round(w * scale))), mode="bilinear", antialias=True, align_corners=False
        )
    return (x.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).tolist()


def hooked_forward(model: nn.Module, images: torch.Tensor, handles: list) -> None:
    """One eval-mode, no-grad forward of ``model`` while the read-only hook ``handles`` are registered; removes them after."""
    try:
        if handles:
            forward(model, images)
    finally:
        for h in handles:
            h.remove()
