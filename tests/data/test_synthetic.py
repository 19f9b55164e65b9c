"""Built-in synthetic sets: determinism, shapes and class semantics checked from the images themselves."""

from __future__ import annotations

import math

import pytest
import torch

from freqkit.data import SHAPES_CLASSES, ShapesDataset, TexturesDataset, shapes_sample, textures_sample
from freqkit.errors import FreqkitError


def test_shapes_is_a_pure_function_of_seed_split_index():
    a = shapes_sample(3, "train", 5, (32, 32))
    b = shapes_sample(3, "train", 5, (32, 32))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    for other in (
        shapes_sample(4, "train", 5, (32, 32)),
        shapes_sample(3, "val", 5, (32, 32)),
        shapes_sample(3, "train", 6, (32, 32)),
    ):
        assert not torch.equal(a[0], other[0])
    ds = ShapesDataset("train", size=32, length=10, seed=3)
    assert torch.equal(ds[5][0], a[0]) and torch.equal(ds[5][1], a[1])


def test_shapes_any_size_and_valid_masks():
    for size in ((32, 32), (40, 56), (96, 64)):
        img, mask = shapes_sample(0, "val", 1, size)
        assert img.shape == (3, *size) and img.dtype == torch.float32
        assert mask.shape == size and mask.dtype == torch.int64
        assert 0 <= float(img.min()) and float(img.max()) <= 1
        assert int(mask.min()) >= 0 and int(mask.max()) < len(SHAPES_CLASSES)


def test_shapes_covers_every_class():
    seen = torch.zeros(len(SHAPES_CLASSES), dtype=torch.long)
    for i in range(12):
        seen += torch.bincount(shapes_sample(0, "train", i)[1].flatten(), minlength=len(SHAPES_CLASSES))
    assert (seen > 0).all()


def _neighbour_diff_energy(img: torch.Tensor, region: torch.Tensor) -> float:
    """Mean squared difference between horizontally / vertically adjacent pixels inside ``region``."""
    dx = (img[:, :, 1:] - img[:, :, :-1]).pow(2).sum(0)
    dy = (img[:, 1:, :] - img[:, :-1, :]).pow(2).sum(0)
    inside_x = region[:, 1:] & region[:, :-1]
    inside_y = region[1:, :] & region[:-1, :]
    total = dx[inside_x].sum() + dy[inside_y].sum()
    count = inside_x.sum() + inside_y.sum()
    return float(total / count.clamp_min(1))


def test_texture_classes_are_high_frequency_and_background_is_smooth():
    energy = {c: [] for c in range(4)}
    for i in range(20):
        img, mask = shapes_sample(1, "train", i)
        for c in range(4):
            if (mask == c).sum() > 40:
                energy[c].append(_neighbour_diff_energy(img, mask == c))
    bg = sum(energy[0]) / len(energy[0])
    for c in (1, 2, 3):
        assert energy[c], f"class {c} never appeared"
        # textured regions vary between neighbouring pixels far more than the smooth background
        assert sum(energy[c]) / len(energy[c]) > 10 * bg


def test_lines_are_thin():
    # almost every line pixel touches a non-line pixel (1-2 px wide strokes, not blobs)
    thin, total = 0, 0
    for i in range(10):
        _, mask = shapes_sample(2, "train", i)
        line = mask == 4
        padded = torch.nn.functional.pad(line[None, None].float(), (1, 1, 1, 1), value=0)[0, 0].bool()
        interior = padded[1:-1, 1:-1] & padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
        thin += int((line & ~interior).sum())
        total += int(line.sum())
    assert total > 0 and thin / total > 0.9


def test_texture_energy_lies_in_the_class_band():
    n = 6
    edges = torch.logspace(math.log10(1 / 16), 0.0, n + 1)
    h = w = 64
    fy = torch.fft.fftfreq(h)[:, None]
    fx = torch.fft.fftfreq(w)[None, :]
    rho = torch.sqrt(fy**2 + fx**2) / 0.5
    labels = set()
    for i in range(24):
        img, label = textures_sample(0, "train", i, (h, w), n)
        labels.add(label)
        power = torch.fft.fft2(img - img.mean(dim=(1, 2), keepdim=True)).abs().pow(2).sum(0)
        band = (rho >= edges[label]) & (rho < edges[label + 1])
        # the band holds most of the energy (small leaks: clipping to [0, 1] and 1% pixel noise)
        assert float(power[band].sum() / power.sum()) > 0.8
    assert len(labels) >= 4


def test_textures_dataset_deterministic_and_errors():
    ds = TexturesDataset("val", size=32, length=5, seed=2, num_classes=4)
    assert len(ds) == 5 and len(ds.classes) == 4
    x0, y0 = ds[3]
    x1, y1 = TexturesDataset("val", size=32, length=5, seed=2, num_classes=4)[3]
    assert torch.equal(x0, x1) and y0 == y1 and 0 <= y0 < 4
    with pytest.raises(IndexError):
        ds[5]
    with pytest.raises(FreqkitError, match="num_classes"):
        TexturesDataset(num_classes=1)
    with pytest.raises(FreqkitError, match="split"):
        ShapesDataset("test")
    with pytest.raises(FreqkitError, match="at least 8"):
        ShapesDataset(size=4)
