"""Image decoding: 16-bit and float files keep their intensities (no clipping), bad ones and decompression bombs are one line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from freqkit.data.folders import ImageFolderDataset, SegmentationFolderDataset
from freqkit.errors import FreqkitError


def _folder(root: Path, name: str, writer) -> ImageFolderDataset:
    (root / "a").mkdir(parents=True, exist_ok=True)
    writer(root / "a" / name)
    return ImageFolderDataset(root, size=8)


def _centre_crop_reference(gray: np.ndarray, size: int) -> np.ndarray:
    """The eval transform on a float image: shorter side to size / 0.875 (bilinear), centre crop."""
    im = Image.fromarray(gray.astype(np.float32), mode="F")
    short = round(size / 0.875)
    im = im.resize((short, short), resample=2)
    left = (short - size) // 2
    return np.asarray(im.crop((left, left, left + size, left + size)), dtype=np.float32)


def test_16_bit_png_keeps_its_intensities(tmp_path):
    rng = np.random.default_rng(0)
    a = rng.integers(0, 65536, size=(16, 16), dtype=np.uint16)
    ds = _folder(tmp_path, "x.png", lambda p: Image.fromarray(a).save(p))
    x, _ = ds[0]
    assert x.shape == (3, 8, 8) and torch.equal(x[0], x[1]) and torch.equal(x[0], x[2])
    want = _centre_crop_reference(a / 65535.0, 8)
    np.testing.assert_allclose(x[0].numpy(), want, rtol=0, atol=1e-6)  # intensities in [0, 1]: absolute = relative
    # convert("RGB") would have clipped this image to almost pure white
    assert 0.3 < float(x.mean()) < 0.7


def test_float_tiff_in_unit_range_is_read_as_is(tmp_path):
    g = np.linspace(0, 1, 256, dtype=np.float32).reshape(16, 16)
    ds = _folder(tmp_path, "x.tif", lambda p: Image.fromarray(g, mode="F").save(p))
    x, _ = ds[0]
    np.testing.assert_allclose(x[0].numpy(), _centre_crop_reference(g, 8), rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    "values, message",
    [
        (np.full((8, 8), 300.0, np.float32), r"float image .* has values in \[300, 300\]"),
        (np.array([[np.nan, 0.5]] * 2, np.float32), r"float image .* holds NaN or inf"),
    ],
)
def test_float_images_outside_unit_range_are_refused(tmp_path, values, message):
    ds = _folder(tmp_path, "x.tif", lambda p: Image.fromarray(values, mode="F").save(p))
    with pytest.raises(FreqkitError, match=message):
        ds[0]
    with pytest.raises(FreqkitError, match=message):
        ds.check()


def test_decompression_bomb_is_one_line(tmp_path, monkeypatch):
    ds = _folder(tmp_path, "x.png", lambda p: Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(p))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 64 x 64 = 4096 pixels > 2 x 1000
    with pytest.raises(FreqkitError, match=r"decompression-bomb limit .*MAX_IMAGE_PIXELS"):
        ds[0]
    with pytest.raises(FreqkitError, match=r"decompression-bomb"):
        ds.check(decode=False)


def test_16_bit_masks_and_check_reads_every_pair(tmp_path):
    (tmp_path / "img").mkdir()
    (tmp_path / "ann").mkdir()
    lab = np.zeros((8, 8), np.uint16)
    lab[4:] = 300  # a 16-bit label, valid in a 301-class set
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "img" / "0.png")
    Image.fromarray(lab).save(tmp_path / "ann" / "0.png")
    ds = SegmentationFolderDataset(tmp_path / "img", tmp_path / "ann", num_classes=301, size=8)
    ds.check()
    assert int(ds[0][1].max()) == 300
    small = SegmentationFolderDataset(tmp_path / "img", tmp_path / "ann", num_classes=10, size=8)
    with pytest.raises(FreqkitError, match=r"class index 300 but the dataset has 10 classes"):
        small.check()
    Image.fromarray(np.zeros((4, 8), np.uint8)).save(tmp_path / "ann" / "0.png")
    with pytest.raises(FreqkitError, match=r"is 8x4 but image .* is 8x8"):
        ds.check()
