"""The paper segmentation pipeline on tiny generated ADE20K folders: crop size, ignore padding, cat_max_ratio, determinism."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from freqkit.data import ade20k_dataset, build_datasets
from freqkit.data.transforms import PAD_IMAGE_MEAN, SegTrainTransform, random_crop, rescale_size
from freqkit.errors import FreqkitError

SIZES = [(37, 23), (150, 91), (61, 97)]  # (W, H): odd, non-square, smaller and larger than the crops used


def make_ade(root: Path, sizes=SIZES, seed: int = 0) -> Path:
    """ADEChallengeData2016 layout with random RGB images and raw labels 1..3 (no 0 = no ignore inside the image)."""
    rng = np.random.default_rng(seed)
    for sub in ("training", "validation"):
        (root / "images" / sub).mkdir(parents=True, exist_ok=True)
        (root / "annotations" / sub).mkdir(parents=True, exist_ok=True)
        for i, (w, h) in enumerate(sizes):
            Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(root / "images" / sub / f"ADE_{i:03d}.jpg")
            lab = np.ones((h, w), np.uint8)
            lab[:, w // 3 :] = 2
            lab[h // 2 :, : w // 2] = 3
            Image.fromarray(lab).save(root / "annotations" / sub / f"ADE_{i:03d}.png")
    return root


def test_small_images_are_padded_with_ignore_and_fill(tmp_path):
    root = make_ade(tmp_path)
    ds = ade20k_dataset(root, "train", train=True, crop_size=64, scale=(40, 20), ratio_range=(0.5, 1.0))
    for i, (w, h) in enumerate(SIZES):
        x, y = ds[i]
        assert x.shape == (3, 64, 64) and y.shape == (64, 64) and y.dtype == torch.int64
        valid = y != 255
        rows, cols = valid.any(1).nonzero().flatten(), valid.any(0).nonzero().flatten()
        vh, vw = int(rows.max()) + 1, int(cols.max()) + 1
        assert bool(valid[:vh, :vw].all()) and not bool(valid[vh:].any()) and not bool(valid[:, vw:].any())
        lo, hi = rescale_size(h, w, (20, 10)), rescale_size(h, w, (40, 20))  # the ends of the ratio range
        assert lo[0] <= vh <= hi[0] and lo[1] <= vw <= hi[1]
        pad = x[:, vh:, :].reshape(3, -1)
        assert torch.allclose(pad, torch.tensor(PAD_IMAGE_MEAN)[:, None].expand_as(pad))
        assert set(torch.unique(y[valid]).tolist()) <= {0, 1, 2}  # raw 1..3 -> classes 0..2


def test_large_images_give_full_crops_without_padding(tmp_path):
    root = make_ade(tmp_path)
    ds = ade20k_dataset(root, "train", train=True, crop_size=32, scale=(400, 200), ratio_range=(1.0, 1.0))
    for i in range(len(ds)):
        x, y = ds[i]
        assert x.shape == (3, 32, 32) and bool((y != 255).all())
        assert float(x.min()) >= 0 and float(x.max()) <= 1


def test_eval_items_keep_original_size_and_labels(tmp_path):
    root = make_ade(tmp_path)
    ds = ade20k_dataset(root, "val", crop_size=32)
    for i, (w, h) in enumerate(SIZES):
        x, y = ds[i]
        raw = np.array(Image.open(root / "annotations" / "validation" / f"ADE_{i:03d}.png"), dtype=np.int64)
        assert x.shape == (3, h, w) and torch.equal(y, torch.from_numpy(raw - 1))


def test_stream_is_a_function_of_seed_epoch_index(tmp_path):
    root = make_ade(tmp_path)
    a = ade20k_dataset(root, "train", train=True, crop_size=32, seed=3)
    b = ade20k_dataset(root, "train", train=True, crop_size=32, seed=3)
    torch.manual_seed(0)
    xa, ya = a[1]
    torch.manual_seed(1)  # the global RNG plays no part
    xb, yb = b[1]
    assert torch.equal(xa, xb) and torch.equal(ya, yb)
    b.set_epoch(1)
    xc, _ = b[1]
    assert not torch.equal(xa, xc)


def test_cat_max_ratio_redraws_dominated_crops():
    # 96 x 96 labels: columns 0..23 class 1, the rest class 0; 48-px crops at left offset x hold class 0 over
    # 75 % unless x < 12 -> a single draw is acceptable with p = 12 / 49; the kept crop after up to 10 redraws
    # is acceptable with 1 - (1 - p)^11
    mask = torch.zeros(96, 96, dtype=torch.int64)
    mask[:, :24] = 1
    image = torch.zeros(3, 96, 96)
    ok_offsets = sum(1 for x in range(49) if (48 - max(0, 24 - x)) / 48 < 0.75)
    p = ok_offsets / 49

    def share(ratio: float) -> float:
        good = 0
        for seed in range(300):
            _, m = random_crop(image, mask, 48, torch.Generator().manual_seed(seed), cat_max_ratio=ratio)
            counts = torch.bincount(m.flatten(), minlength=2)
            good += int(counts.max() / counts.sum() < 0.75)
        return good / 300

    assert abs(share(1.0) - p) < 0.08
    assert abs(share(0.75) - (1 - (1 - p) ** 11)) < 0.05


def test_build_datasets_crop_size_and_errors(tmp_path):
    root = make_ade(tmp_path)
    splits, info = build_datasets(f"ade20k:{root}", crop_size=32)
    assert info.img_size == 32 and splits["train"][0][0].shape == (3, 32, 32)
    assert splits["val"][1][0].shape == (3, 91, 150)
    with pytest.raises(FreqkitError, match="crop_size"):
        build_datasets("shapes:size=32,train=4,val=2", crop_size=32)
    with pytest.raises(FreqkitError, match="cat_max_ratio"):
        SegTrainTransform(32, cat_max_ratio=0.0)


def test_pairs_use_the_same_pipeline(tmp_path):
    rng = np.random.default_rng(1)
    for split in ("train", "val"):
        for i in range(3):
            for kind in ("img", "ann"):
                (tmp_path / kind / split).mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (45, 70, 3), dtype=np.uint8)).save(tmp_path / "img" / split / f"{i}.png")
            Image.fromarray(rng.integers(0, 4, (45, 70), dtype=np.uint8)).save(tmp_path / "ann" / split / f"{i}.png")
    splits, info = build_datasets(f"pairs:{tmp_path / 'img'}:{tmp_path / 'ann'}", crop_size=32)
    assert info.num_classes == 4 and splits["train"][0][0].shape == (3, 32, 32) and splits["val"][0][1].shape == (45, 70)
