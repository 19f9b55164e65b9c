"""Joint image + mask transforms of the standard ADE20K semantic-segmentation training pipeline.

The steps and values are those of the FDAM paper's UPerNet recipe (the mmsegmentation ADE20K
pipeline): random rescale to ``scale`` x a ratio in ``ratio_range`` keeping the aspect ratio, a
random ``crop_size`` crop in which no class covers more than ``cat_max_ratio`` of the labelled
pixels (up to 10 tries), a horizontal flip with probability 0.5, photometric distortion
(brightness +-32, contrast 0.5-1.5, saturation 0.5-1.5, hue +-18 on OpenCV's 0-180 hue scale,
each with probability 0.5), then padding to ``crop_size`` (labels 255).

Images travel as ``tv_tensors.Image`` float32 on the 0-255 scale (the distortion's values are in
those units) and masks as ``tv_tensors.Mask`` int64 class indices (255 = ignore); resizing and
cropping use ``torchvision.transforms.v2.functional``. Every random draw comes from an explicit
``torch.Generator`` (the dataset seeds one per (seed, epoch, index)), never from the global RNG.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torchvision import tv_tensors
from torchvision.transforms.v2 import functional as TF

from freqkit.errors import FreqkitError

__all__ = [
    "SegTrainTransform",
    "random_rescale",
    "rescale_size",
    "random_crop",
    "photometric_distortion",
    "pad_to",
    "IGNORE_INDEX",
    "PAD_IMAGE_MEAN",
]

IGNORE_INDEX = 255
# padding happens after normalization in the reference pipeline (padded pixels are 0 there): padding the
# [0, 1] image with the ImageNet mean gives the same 0 once the training loop normalizes it
PAD_IMAGE_MEAN = (0.485, 0.456, 0.406)


def _uniform(g: torch.Generator, lo: float, hi: float) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=g))


def _coin(g: torch.Generator, p: float = 0.5) -> bool:
    return float(torch.rand((), generator=g)) < p


def rescale_size(height: int, width: int, scale: tuple[int, int]) -> tuple[int, int]:
    """(H', W') of an image rescaled to fit ``scale`` = (long, short) bounds keeping its aspect ratio (mmcv ``rescale``)."""
    long_b, short_b = max(scale), min(scale)
    factor = min(long_b / max(height, width), short_b / min(height, width))
    return max(1, int(height * factor + 0.5)), max(1, int(width * factor + 0.5))


def random_rescale(
    image: torch.Tensor, mask: torch.Tensor, scale: tuple[int, int], ratio_range: tuple[float, float], g: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rescale (3, H, W) image (bilinear) and (H, W) mask (nearest) to ``scale`` x U(ratio_range), aspect ratio kept."""
    r = _uniform(g, *ratio_range)
    h, w = rescale_size(image.shape[-2], image.shape[-1], (int(scale[0] * r), int(scale[1] * r)))
    # no antialiasing: the reference pipeline resizes with OpenCV's plain bilinear interpolation
    image = TF.resize(image, [h, w], interpolation=TF.InterpolationMode.BILINEAR, antialias=False)
    mask = TF.resize(mask, [h, w], interpolation=TF.InterpolationMode.NEAREST)
    return image, mask


def _crop_box(h: int, w: int, crop: int, g: torch.Generator) -> tuple[int, int]:
    top = int(torch.randint(0, max(h - crop, 0) + 1, (), generator=g))
    left = int(torch.randint(0, max(w - crop, 0) + 1, (), generator=g))
    return top, left


def random_crop(
    image: torch.Tensor, mask: torch.Tensor, crop: int, g: torch.Generator, cat_max_ratio: float = 1.0, tries: int = 10
) -> tuple[torch.Tensor, torch.Tensor]:
    """A random ``crop`` x ``crop`` window (smaller where the image is); with ``cat_max_ratio`` < 1 the window is redrawn
    (up to ``tries`` times, the last draw kept) until it holds >= 2 classes and none over that share of its labelled pixels."""
    h, w = mask.shape[-2:]
    top, left = _crop_box(h, w, crop, g)
    if cat_max_ratio < 1.0:
        for _ in range(tries):
            window = mask[..., top : top + crop, left : left + crop]
            _, counts = torch.unique(window[window != IGNORE_INDEX], return_counts=True)
            if counts.numel() > 1 and float(counts.max()) / float(counts.sum()) < cat_max_ratio:
                break
            top, left = _crop_box(h, w, crop, g)
    ch, cw = min(crop, h - top), min(crop, w - left)
    return TF.crop(image, top, left, ch, cw), TF.crop(mask, top, left, ch, cw)


def photometric_distortion(
    image: torch.Tensor,
    g: torch.Generator,
    brightness: float = 32.0,
    contrast: tuple[float, float] = (0.5, 1.5),
    saturation: tuple[float, float] = (0.5, 1.5),
    hue: float = 18.0,
) -> torch.Tensor:
    """Random brightness (+-``brightness``), contrast (x U(contrast)), saturation and hue (+-``hue`` of 180), each with p=0.5,
    on a (3, H, W) float image in 0..255; contrast comes first or last at random (as in the reference pipeline).

    Brightness adds and contrast multiplies on the 0-255 scale (clipped); saturation and hue use torchvision's
    ``adjust_saturation`` (blend with greyscale) and ``adjust_hue`` (HSV rotation by hue / 180 of a turn).
    """
    x = image
    if _coin(g):
        x = (x + _uniform(g, -brightness, brightness)).clamp(0, 255)
    contrast_first = _coin(g)
    if contrast_first and _coin(g):
        x = (x * _uniform(g, *contrast)).clamp(0, 255)
    if _coin(g):
        x = TF.adjust_saturation(x / 255.0, _uniform(g, *saturation)).clamp(0, 1) * 255.0
    if _coin(g):
        x = TF.adjust_hue(x / 255.0, _uniform(g, -hue, hue) / 180.0) * 255.0
    if not contrast_first and _coin(g):
        x = (x * _uniform(g, *contrast)).clamp(0, 255)
    return x


def pad_to(
    image: torch.Tensor, mask: torch.Tensor, size: int, fill: tuple[float, ...] = (0.0, 0.0, 0.0)
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad (3, h, w) image (per-channel ``fill``) and (h, w) mask (255) at the bottom and right to ``size`` x ``size``."""
    h, w = mask.shape[-2:]
    if h >= size and w >= size:
        return image, mask
    out = torch.empty(3, max(h, size), max(w, size), dtype=image.dtype)
    out[:] = torch.tensor(fill, dtype=image.dtype)[:, None, None]
    out[:, :h, :w] = image
    m = torch.full((max(h, size), max(w, size)), IGNORE_INDEX, dtype=mask.dtype)
    m[:h, :w] = mask
    return out, m


@dataclass(frozen=True)
class SegTrainTransform:
    """The training pipeline: (image (3, H, W) in [0, 1], mask (H, W) class indices) -> (3, crop, crop), (crop, crop).

    Call with a seeded ``torch.Generator``; the output is a function of the inputs and the generator state only.
    """

    crop_size: int = 512
    scale: tuple[int, int] = (2048, 512)
    ratio_range: tuple[float, float] = (0.5, 2.0)
    cat_max_ratio: float = 0.75
    flip_p: float = 0.5
    photometric: bool = True
    pad_fill: tuple[float, ...] = PAD_IMAGE_MEAN

    def __post_init__(self) -> None:
        if int(self.crop_size) < 1:
            raise FreqkitError(f"crop_size must be >= 1, got {self.crop_size}")
        lo, hi = self.ratio_range
        if not 0 < lo <= hi:
            raise FreqkitError(f"ratio_range must be (low, high) with 0 < low <= high, got {self.ratio_range}")
        if len(self.scale) != 2 or min(self.scale) < 1:
            raise FreqkitError(f"scale must be two positive sizes (long, short), got {self.scale}")
        if not 0 < self.cat_max_ratio <= 1:
            raise FreqkitError(f"cat_max_ratio must be in (0, 1], got {self.cat_max_ratio}")

    def __call__(self, image: torch.Tensor, mask: torch.Tensor, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(3, H, W) float in [0, 1], (H, W) int64 -> (3, crop, crop) float in [0, 1], (crop, crop) int64 (255 = ignore)."""
        img = tv_tensors.Image(image.float() * 255.0)
        m = tv_tensors.Mask(mask)
        img, m = random_rescale(img, m, self.scale, self.ratio_range, g)
        img, m = random_crop(img, m, int(self.crop_size), g, self.cat_max_ratio)
        if _coin(g, self.flip_p):
            img, m = TF.horizontal_flip(img), TF.horizontal_flip(m)
        if self.photometric:
            img = photometric_distortion(img, g)
        x = (img.as_subclass(torch.Tensor) / 255.0).clamp(0, 1)
        return pad_to(x, m.as_subclass(torch.Tensor), int(self.crop_size), self.pad_fill)
