"""Built-in synthetic datasets, generated deterministically from a seed (no download).

``shapes`` (dense prediction): RGB scenes of textured regions, thin lines and sharp boundaries,
with a per-pixel class mask. Region classes differ only by their texture (fine stripes, a
checkerboard, pixel noise); colours, shape outlines and sizes are drawn independently of the class,
so a model has to keep high-frequency content to tell the regions apart, and to get 1-pixel lines
and boundaries right.

``textures`` (classification): band-pass filtered noise; class ``c`` keeps only the spatial
frequencies with normalized radius rho in band ``c`` (log-spaced bands up to Nyquist), with a
random colour, mean and contrast, and unit variance before colouring: the classes differ mainly in
their frequency content.

Sample ``i`` of a split depends only on (seed, split, i, size): any subset, any order, any number of
DataLoader workers or processes gives the same tensors. Texture periods and line widths are in
pixels (high frequencies stay high at every image size); shape sizes scale with the image.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch.utils.data import Dataset

from freqkit.errors import FreqkitError

__all__ = ["ShapesDataset", "TexturesDataset", "SHAPES_CLASSES", "shapes_sample", "textures_sample"]

SHAPES_CLASSES = ("background", "stripes", "checker", "noise", "line")
_SPLIT_OFFSET = {"train": 0, "val": 1}


def _generator(seed: int, split: str, index: int, tag: int) -> torch.Generator:
    if split not in _SPLIT_OFFSET:
        raise FreqkitError(f"unknown split {split!r}; use 'train' or 'val'")
    # a fixed integer mix of (seed, split, index, dataset tag): no Python hash() (salted per process)
    key = (((seed * 1_000_003 + _SPLIT_OFFSET[split]) * 1_000_033 + index) * 97 + tag) % (2**63 - 1)
    return torch.Generator().manual_seed(key)


def _uniform(g: torch.Generator, lo: float, hi: float, *shape: int) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(*shape, generator=g) if shape else lo + (hi - lo) * float(torch.rand((), generator=g))


def _two_colours(g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Two random RGB colours (3,) whose mean intensities differ by at least 0.3 (a visible texture)."""
    a = torch.rand(3, generator=g)
    for _ in range(8):
        b = torch.rand(3, generator=g)
        if (a.mean() - b.mean()).abs() >= 0.3:
            return a, b
    if (a.mean() - 0.5).abs() >= 0.15:
        return a, 1.0 - a
    return a * 0.3, 0.7 + a * 0.3


def _shape_region(g: torch.Generator, yy: torch.Tensor, xx: torch.Tensor, scale: float) -> torch.Tensor:
    """A random ellipse, rotated rectangle or triangle as a boolean (H, W) map."""
    h, w = yy.shape
    cy, cx = _uniform(g, 0.1 * h, 0.9 * h), _uniform(g, 0.1 * w, 0.9 * w)
    ry, rx = _uniform(g, 7, 20) * scale, _uniform(g, 7, 20) * scale
    theta = _uniform(g, 0, math.pi)
    dy, dx = yy - cy, xx - cx
    u = dx * math.cos(theta) + dy * math.sin(theta)
    v = -dx * math.sin(theta) + dy * math.cos(theta)
    kind = int(torch.randint(0, 3, (), generator=g))
    if kind == 0:
        return (u / rx) ** 2 + (v / ry) ** 2 <= 1.0
    if kind == 1:
        return (u.abs() <= rx) & (v.abs() <= ry)
    # triangle: three random points on the ellipse, inside = same side of every edge
    angles = torch.sort(_uniform(g, 0, 2 * math.pi, 3)).values
    px = cx + rx * torch.cos(angles)
    py = cy + ry * torch.sin(angles)
    inside = torch.ones_like(yy, dtype=torch.bool)
    for i in range(3):
        j = (i + 1) % 3
        cross = (px[j] - px[i]) * (yy - py[i]) - (py[j] - py[i]) * (xx - px[i])
        inside &= cross >= 0
    return inside


def _texture(g: torch.Generator, cls: int, yy: torch.Tensor, xx: torch.Tensor) -> torch.Tensor:
    """A binary texture (H, W) in {0, 1} for region class ``cls`` (1 stripes, 2 checker, 3 noise)."""
    theta = _uniform(g, 0, math.pi)
    u = xx * math.cos(theta) + yy * math.sin(theta)
    v = -xx * math.sin(theta) + yy * math.cos(theta)
    if cls == 1:  # square-wave stripes, period 3-6 px
        period = _uniform(g, 3.0, 6.0)
        return (torch.remainder(u / period + _uniform(g, 0, 1), 1.0) < 0.5).float()
    if cls == 2:  # checkerboard, cells of 2-4 px
        cell = _uniform(g, 2.0, 4.0)
        return torch.remainder(torch.floor(u / cell) + torch.floor(v / cell), 2.0)
    if cls == 3:  # i.i.d. binary pixel noise
        return (torch.rand(yy.shape, generator=g) < 0.5).float()
    raise AssertionError(cls)


def _segment_distance(yy: torch.Tensor, xx: torch.Tensor, p0: tuple[float, float], p1: tuple[float, float]) -> torch.Tensor:
    """Distance (H, W) from each pixel centre to the segment p0-p1 (points as (y, x))."""
    (y0, x0), (y1, x1) = p0, p1
    dy, dx = y1 - y0, x1 - x0
    length2 = max(dy * dy + dx * dx, 1e-9)
    t = (((yy - y0) * dy + (xx - x0) * dx) / length2).clamp(0, 1)
    return torch.hypot(yy - (y0 + t * dy), xx - (x0 + t * dx))


def shapes_sample(seed: int, split: str, index: int, size: tuple[int, int] = (64, 64)) -> tuple[torch.Tensor, torch.Tensor]:
    """Scene ``index`` of the ``shapes`` set: image (3, H, W) float in [0, 1] and mask (H, W) int64 in 0..4."""
    h, w = size
    g = _generator(seed, split, index, tag=1)
    scale = min(h, w) / 64.0
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")

    # background: a random colour with smooth (below 2 cycles per image) shading
    img = torch.rand(3, 1, 1, generator=g).expand(3, h, w).clone()
    for _ in range(2):
        fy, fx = _uniform(g, -2, 2) / h, _uniform(g, -2, 2) / w
        wave = torch.cos(2 * math.pi * (fy * yy + fx * xx) + _uniform(g, 0, 2 * math.pi))
        img += 0.12 * (torch.rand(3, 1, 1, generator=g) - 0.5) * 2 * wave
    mask = torch.zeros(h, w, dtype=torch.int64)

    for _ in range(int(torch.randint(2, 6, (), generator=g))):
        cls = int(torch.randint(1, 4, (), generator=g))
        region = _shape_region(g, yy, xx, scale)
        tex = _texture(g, cls, yy, xx)
        a, b = _two_colours(g)
        painted = a[:, None, None] * tex + b[:, None, None] * (1 - tex)
        img = torch.where(region, painted, img)
        mask[region] = cls

    # thin structures: 1-2 px wide straight lines drawn on top
    for _ in range(int(torch.randint(1, 4, (), generator=g))):
        p0 = (_uniform(g, 0, h - 1), _uniform(g, 0, w - 1))
        ang = _uniform(g, 0, 2 * math.pi)
        length = _uniform(g, 0.4, 1.0) * min(h, w)
        p1 = (p0[0] + length * math.sin(ang), p0[1] + length * math.cos(ang))
        half_width = 0.5 if float(torch.rand((), generator=g)) < 0.6 else 1.0
        line = _segment_distance(yy, xx, p0, p1) <= half_width
        colour = torch.rand(3, generator=g)
        img = torch.where(line, colour[:, None, None].expand(3, h, w), img)
        mask[line] = 4

    img = img + 0.02 * torch.randn(3, h, w, generator=g)
    return img.clamp_(0, 1), mask


def _band_edges(num_classes: int) -> torch.Tensor:
    """Band edges on normalized radius rho (Nyquist = 1): log-spaced from 1/16 to 1."""
    return torch.logspace(math.log10(1 / 16), 0.0, num_classes + 1)


def textures_sample(
    seed: int, split: str, index: int, size: tuple[int, int] = (64, 64), num_classes: int = 6
) -> tuple[torch.Tensor, int]:
    """Texture ``index``: image (3, H, W) float in [0, 1] and its class (frequency band) in 0..num_classes-1."""
    h, w = size
    g = _generator(seed, split, index, tag=2 + num_classes)
    label = int(torch.randint(0, num_classes, (), generator=g))
    edges = _band_edges(num_classes)
    lo, hi = float(edges[label]), float(edges[label + 1])
    # radius in units of Nyquist, fftfreq convention (as spectral.high_frequency_ratio)
    fy = torch.fft.fftfreq(h)[:, None]
    fx = torch.fft.fftfreq(w)[None, :]
    rho = torch.sqrt(fy**2 + fx**2) / 0.5
    band = ((rho >= lo) & (rho < hi)).float()
    if band.sum() == 0:  # tiny images: keep the nearest frequency so the class is still defined
        band = (rho - (lo + hi) / 2).abs().eq((rho - (lo + hi) / 2).abs().min()).float()
    noise = torch.randn(h, w, generator=g)
    pattern = torch.fft.ifft2(torch.fft.fft2(noise) * band).real
    pattern = (pattern - pattern.mean()) / pattern.std().clamp_min(1e-6)
    colour = 0.3 + 0.7 * torch.rand(3, generator=g)
    mean = _uniform(g, 0.35, 0.65, 3)
    contrast = _uniform(g, 0.12, 0.2)
    img = mean[:, None, None] + contrast * colour[:, None, None] * pattern
    img = img + 0.01 * torch.randn(3, h, w, generator=g)
    return img.clamp_(0, 1), label


def _check_size(size: int | tuple[int, int]) -> tuple[int, int]:
    hw = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    if min(hw) < 8:
        raise FreqkitError(f"built-in images must be at least 8 x 8 pixels, got {hw[0]} x {hw[1]}; pass a larger size")
    return hw


class ShapesDataset(Dataset):
    """The ``shapes`` segmentation set: items (image (3, H, W) in [0, 1], mask (H, W) int64, 5 classes)."""

    num_classes = len(SHAPES_CLASSES)
    classes = SHAPES_CLASSES
    task = "segmentation"

    def __init__(
        self, split: str = "train", size: int | tuple[int, int] = 64, length: Optional[int] = None, seed: int = 0
    ) -> None:
        self.split, self.size, self.seed = split, _check_size(size), int(seed)
        self.length = int(length if length is not None else (2000 if split == "train" else 128))
        if self.length < 1:
            raise FreqkitError(f"shapes: the {split} split must have at least 1 image, got {self.length}")
        _generator(self.seed, split, 0, 0)  # validates the split name

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not 0 <= index < self.length:
            raise IndexError(index)
        return shapes_sample(self.seed, self.split, int(index), self.size)


class TexturesDataset(Dataset):
    """The ``textures`` classification set: items (image (3, H, W) in [0, 1], class index); classes = frequency bands."""

    task = "classification"

    def __init__(
        self,
        split: str = "train",
        size: int | tuple[int, int] = 64,
        length: Optional[int] = None,
        seed: int = 0,
        num_classes: int = 6,
    ) -> None:
        if not 2 <= num_classes <= 16:
            raise FreqkitError(f"textures: num_classes must be in 2..16, got {num_classes}")
        self.split, self.size, self.seed, self.num_classes = split, _check_size(size), int(seed), int(num_classes)
        self.length = int(length if length is not None else (2000 if split == "train" else 256))
        if self.length < 1:
            raise FreqkitError(f"textures: the {split} split must have at least 1 image, got {self.length}")
        edges = _band_edges(num_classes)
        self.classes = tuple(f"band_{float(edges[i]):.3f}-{float(edges[i + 1]):.3f}" for i in range(num_classes))
        _generator(self.seed, split, 0, 0)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        if not 0 <= index < self.length:
            raise IndexError(index)
        return textures_sample(self.seed, self.split, int(index), self.size, self.num_classes)
