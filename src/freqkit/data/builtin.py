"""Built-in sample photographs for diagnostics.

Nothing is bundled with freqkit: the photographs are the ones scikit-image ships inside its wheel
(no download). Images come back resized (shorter side to fit, antialiased) and centre-cropped to
(H, W), normalized with the ImageNet mean / std that timm classifiers expect.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from freqkit.errors import FreqkitError

__all__ = ["BUILTIN_IMAGES", "IMAGENET_MEAN", "IMAGENET_STD", "builtin_images", "prepare_images"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# scikit-image photographs that live in its installed data folder (checked: no pooch download)
BUILTIN_IMAGES = ("astronaut", "camera", "coffee", "chelsea", "rocket", "immunohistochemistry", "hubble_deep_field", "coins")


def _size(size: int | Sequence[int]) -> tuple[int, int]:
    h, w = (int(size), int(size)) if isinstance(size, int) else (int(size[0]), int(size[1]))
    if h < 1 or w < 1:
        raise FreqkitError(f"image size {(h, w)} must be positive; pass e.g. size=(224, 224)")
    return h, w


def _to_chw(array: np.ndarray) -> torch.Tensor:
    """uint8 / bool / float array (H, W) or (H, W, 3|4) -> float tensor (3, H, W) in [0, 1]."""
    a = np.asarray(array)
    if a.dtype == np.bool_:
        a = a.astype(np.float32)
    elif np.issubdtype(a.dtype, np.integer):
        a = a.astype(np.float32) / float(np.iinfo(a.dtype).max)
    t = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))
    if t.ndim == 2:
        t = t[None].expand(3, -1, -1)
    else:
        t = t[..., :3].permute(2, 0, 1)
        if t.shape[0] == 1:
            t = t.expand(3, -1, -1)
    return t.contiguous()


def prepare_images(
    images: Sequence[torch.Tensor], size: int | Sequence[int] = (224, 224), normalize: bool = True
) -> torch.Tensor:
    """Resize (shorter side, antialiased) and centre-crop images (3, h, w) in [0, 1] to (B, 3, H, W), ImageNet-normalized."""
    h, w = _size(size)
    out = []
    for img in images:
        _, ih, iw = img.shape
        scale = max(h / ih, w / iw)
        nh, nw = max(h, round(ih * scale)), max(w, round(iw * scale))
        r = F.interpolate(img[None], size=(nh, nw), mode="bilinear", antialias=True, align_corners=False)[0]
        top, left = (nh - h) // 2, (nw - w) // 2
        out.append(r[:, top : top + h, left : left + w])
    batch = torch.stack(out).clamp_(0.0, 1.0)
    if normalize:
        mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        batch = (batch - mean) / std
    return batch


def builtin_images(size: int | Sequence[int] = (224, 224), names: Optional[Sequence[str]] = None) -> torch.Tensor:
    """scikit-image's shipped photographs as a batch (B, 3, H, W), float32, ImageNet-normalized (B = 8 by default)."""
    try:
        import skimage.data as skdata
    except ImportError:  # pragma: no cover - scikit-image is a dependency
        raise FreqkitError("built-in images need scikit-image; pip install scikit-image, or pass an image folder") from None
    chosen = list(BUILTIN_IMAGES if names is None else names)
    unknown = [n for n in chosen if n not in BUILTIN_IMAGES]
    if unknown or not chosen:
        raise FreqkitError(f"unknown built-in images {unknown or chosen}; choose from {list(BUILTIN_IMAGES)}")
    return prepare_images([_to_chw(getattr(skdata, n)()) for n in chosen], size)
