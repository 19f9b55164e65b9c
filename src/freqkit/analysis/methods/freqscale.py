"""FreqScale (FDAM) figure: the gain 1 + W each module applies per frequency, mean and spread over images (supplementary Fig. 8).

Tap: a forward pre-hook on each FreqScale module. Every application, ``forward`` on a (B, C, H, W) map
or ``apply_tokens`` on tokens, calls the module on the (B, C, H, W) map while it has hooks, and
``FreqScale.spectral_weight`` of that map is the filter W it multiplies the spectrum by. The hook only reads.
"""

from __future__ import annotations

from typing import Any, Optional

import torch
from torch import nn

from freqkit.analysis.methods._common import Images, check_images, hooked_forward, modules_of, to_list
from freqkit.spectral import full_plane

__all__ = ["freqscale_filters", "freqscale_gain", "full_gains", "gain_result", "taps"]


def taps(model: nn.Module, store: dict[str, list]) -> list:
    """Pre-hooks appending, per FreqScale module and call, (W (B or 1, H, W // 2 + 1, C) on the CPU, (H, W)) to ``store[name]``."""
    handles = []
    for name, mod in modules_of(model, "freqscale"):

        def hook(m: nn.Module, args: tuple, name: str = name) -> None:
            if args and isinstance(args[0], torch.Tensor) and args[0].ndim == 4:
                xs = args[0].permute(0, 2, 3, 1)  # the (B, C, H, W) map, channels-last as spectral_weight takes it
                with torch.no_grad():
                    store.setdefault(name, []).append((_freqscale_half_filter(m, xs).cpu(), (int(xs.shape[1]), int(xs.shape[2]))))

        handles.append(mod.register_forward_pre_hook(hook))
    return handles


def _freqscale_half_filter(module: nn.Module, xs: torch.Tensor) -> torch.Tensor:
    """The real filter W (B or 1, H, W // 2 + 1, C) FreqScale multiplies the rfft2 of xs (B, H, W, C) by."""
    return module.spectral_weight(xs).float()


def _freqscale_mode(module: nn.Module) -> str:
    return str(getattr(module, "mode", "unknown"))


def full_gains(store: dict) -> dict[str, torch.Tensor]:
    out = {}
    for name, calls in store.items():
        half, (h, w) = calls[0]
        if len(calls) > 1:  # a module applied several times per forward: all its calls, one after the other
            half = torch.cat([c[0] for c in calls if c[1] == (h, w)])
        full = full_plane(half.permute(0, 3, 1, 2), w)
        out[name] = torch.fft.fftshift(1.0 + full, dim=(-2, -1))
    return out


def freqscale_filters(model: nn.Module, images: Images) -> dict[str, torch.Tensor]:
    """Per FreqScale module, the applied full-plane gain 1 + W, centred, float32 (B, C, H, W) (B = 1 for static)."""
    check_images(images)
    store: dict[str, list] = {}
    hooked_forward(model, images, taps(model, store))
    return full_gains(store)


def gain_result(model: nn.Module, filters: dict[str, torch.Tensor]) -> Optional[dict[str, Any]]:
    if not filters:
        return None
    modes = dict((n, _freqscale_mode(m)) for n, m in modules_of(model, "freqscale"))
    entries = []
    for name, gain in filters.items():
        per_image = gain.mean(dim=1)  # (B, h, w): mean over channels
        mode = modes.get(name, "unknown")
        entries.append(
            {
                "name": name,
                "mode": mode,
                "grid": [int(per_image.shape[-2]), int(per_image.shape[-1])],
                "mean": to_list(per_image.mean(dim=0)),
                "std": None if mode == "static" else to_list(per_image.std(dim=0, unbiased=False)),
                "num_images": int(per_image.shape[0]),
            }
        )
    return {
        "modules": entries,
        "definition": "gain = 1 + W on the full centred frequency plane (DC at the centre), mean over channels; "
        "mean and population std over images",
    }


def freqscale_gain(model: nn.Module, images: Images) -> Optional[dict[str, Any]]:
    """FreqScale's applied gain per frequency for images (B, 3, H, W): per module the centred (h, w) mean and spread; None without FreqScale.

    The gain 1 + W (the module's output plus its input, FS(t) = t + filtered(t), is irfft2(rfft2(t) * (1 + W)))
    is averaged over channels for each image; "mean" is its mean over the images, "std" the population
    standard deviation over the images (None in static mode, where the filter does not depend on the image).
    """
    check_images(images)
    return gain_result(model, freqscale_filters(model, images))
