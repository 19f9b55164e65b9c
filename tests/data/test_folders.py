"""On-disk formats, built as tiny PIL files in tmp_path: image folder, ADE20K layout, image + mask pairs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from freqkit.data import build_datasets, parse_data_spec
from freqkit.errors import FreqkitError


def _rgb(path: Path, size=(20, 16), value=0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.full((size[1], size[0], 3), value, dtype=np.uint8)
    arr[:, : size[0] // 2] = 255 - value  # left half differs: flips are visible
    Image.fromarray(arr).save(path)


def _mask(path: Path, labels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(labels.astype(np.uint8), mode="L").save(path)


def _imagefolder(root: Path, classes=("cat", "dog"), per_class=2) -> None:
    for split in ("train", "val"):
        for c_i, c in enumerate(classes):
            for k in range(per_class):
                _rgb(root / split / c / f"{k}.png", value=40 * c_i + k)


def test_imagefolder_classes_labels_and_eval_transform(tmp_path):
    _imagefolder(tmp_path)
    splits, info = build_datasets(f"imagefolder:{tmp_path}", img_size=16)
    assert info.task == "classification" and info.num_classes == 2 and info.classes == ("cat", "dog")
    val = splits["val"]
    assert len(val) == 4
    x, y = val[2]
    assert x.shape == (3, 16, 16) and y == 1
    # evaluation is deterministic; training draws crops / flips from (seed, epoch, index)
    assert torch.equal(val[2][0], val[2][0])
    tr = splits["train"]
    tr.set_epoch(0)
    a = [tr[i][0] for i in range(4)]
    tr.set_epoch(0)
    assert all(torch.equal(u, tr[i][0]) for i, u in enumerate(a))
    tr.set_epoch(1)
    assert any(not torch.equal(u, tr[i][0]) for i, u in enumerate(a))


def test_imagefolder_bad_layouts(tmp_path):
    with pytest.raises(FreqkitError, match="does not exist"):
        build_datasets(f"imagefolder:{tmp_path / 'nope'}")
    _rgb(tmp_path / "a" / "train" / "x" / "0.png")
    with pytest.raises(FreqkitError, match="no val split"):
        build_datasets(f"imagefolder:{tmp_path / 'a'}")
    (tmp_path / "a" / "val" / "x").mkdir(parents=True)
    with pytest.raises(FreqkitError, match="empty"):
        build_datasets(f"imagefolder:{tmp_path / 'a'}")
    _imagefolder(tmp_path / "b")
    _rgb(tmp_path / "b" / "val" / "emu" / "0.png")
    with pytest.raises(FreqkitError, match="differ from the training split"):
        build_datasets(f"imagefolder:{tmp_path / 'b'}")
    _imagefolder(tmp_path / "c")
    with pytest.raises(FreqkitError, match="has 2 classes but 3"):
        build_datasets(f"imagefolder:{tmp_path / 'c'}", num_classes=3)
    with pytest.raises(FreqkitError, match="classification dataset but the task is segmentation"):
        build_datasets(f"imagefolder:{tmp_path / 'c'}", task="segmentation")


def _ade(root: Path, top_label: int = 150) -> np.ndarray:
    labels = np.zeros((16, 20), dtype=np.int64)
    labels[:, 5:10] = 1
    labels[:, 10:15] = 7
    labels[:, 15:] = top_label
    base = root / "ADEChallengeData2016"
    for sub in ("training", "validation"):
        for name in ("ADE_a_0001", "ADE_a_0002"):
            _rgb(base / "images" / sub / f"{name}.jpg")
            _mask(base / "annotations" / sub / f"{name}.png", labels)
    return labels


def test_ade20k_label_shift_and_ignore(tmp_path):
    raw = _ade(tmp_path)
    for spec in (f"ade20k:{tmp_path}", f"ade20k:{tmp_path / 'ADEChallengeData2016'}"):
        splits, info = build_datasets(spec, img_size=20)
        assert info.num_classes == 150 and info.task == "segmentation"
        x, y = splits["val"][0]
        assert x.shape == (3, 20, 20) and y.shape == (20, 20) and y.dtype == torch.int64
    # the image is resized to 20 x 20 by nearest neighbour: compare against the same resize of the raw labels
    expected = np.array(Image.fromarray(raw.astype(np.int32), mode="I").resize((20, 20), resample=0))
    expected = np.where(expected == 0, 255, expected - 1)
    assert torch.equal(y, torch.from_numpy(expected))
    assert set(torch.unique(y).tolist()) == {255, 0, 6, 149}


def test_ade20k_bad_layouts(tmp_path):
    (tmp_path / "images" / "training").mkdir(parents=True)
    with pytest.raises(FreqkitError, match="not an ADE20K folder"):
        build_datasets(f"ade20k:{tmp_path}")
    _ade(tmp_path / "big", top_label=151)  # 151 - 1 = 150 is not a class of ADE20K's 150
    splits, _ = build_datasets(f"ade20k:{tmp_path / 'big'}", img_size=20)
    with pytest.raises(FreqkitError, match="class index 150 but the dataset has 150 classes"):
        splits["train"][0]
    base = tmp_path / "missing" / "ADEChallengeData2016"
    _rgb(base / "images" / "training" / "x.jpg")
    (base / "annotations" / "training").mkdir(parents=True)
    (base / "images" / "validation").mkdir(parents=True)
    (base / "annotations" / "validation").mkdir(parents=True)
    with pytest.raises(FreqkitError, match="has no mask"):
        build_datasets(f"ade20k:{tmp_path / 'missing'}")


def test_pairs_with_split_folders_and_inferred_classes(tmp_path):
    labels = np.zeros((16, 20), dtype=np.int64)
    labels[4:8] = 3
    labels[0, 0] = 255
    for split in ("train", "val"):
        for k in range(2):
            _rgb(tmp_path / "img" / split / f"{k}.png")
            _mask(tmp_path / "ann" / split / f"{k}.png", labels)
    splits, info = build_datasets(f"pairs:{tmp_path / 'img'}:{tmp_path / 'ann'}", img_size=20)
    assert info.num_classes == 4 and len(splits["train"]) == 2 and len(splits["val"]) == 2
    _, y = splits["val"][0]
    assert set(torch.unique(y).tolist()) == {0, 3, 255}
    # a given class count is taken as is (classes may be absent from a small set) ...
    assert build_datasets(f"pairs:{tmp_path / 'img'}:{tmp_path / 'ann'}", num_classes=6)[1].num_classes == 6
    # ... but a label beyond it is an error when its mask is read
    splits, _ = build_datasets(f"pairs:{tmp_path / 'img'}:{tmp_path / 'ann'}", num_classes=3, img_size=20)
    with pytest.raises(FreqkitError, match="class index 3 but the dataset has 3 classes"):
        splits["train"][0]


def test_pairs_flat_holdout_and_errors(tmp_path):
    labels = np.ones((16, 20), dtype=np.int64)
    for k in range(10):
        _rgb(tmp_path / "img" / f"{k:02d}.png")
        _mask(tmp_path / "ann" / f"{k:02d}.png", labels)
    splits, info = build_datasets(f"pairs:{tmp_path / 'img'}:{tmp_path / 'ann'}", img_size=20)
    assert len(splits["train"]) == 9 and len(splits["val"]) == 1 and info.num_classes == 2
    assert splits["val"].pairs[0][0].name == "09.png"  # every 10th pair, sorted by name
    # an image without a mask, a mask of the wrong size
    _rgb(tmp_path / "img" / "extra.png")
    with pytest.raises(FreqkitError, match="has no mask"):
        build_datasets(f"pairs:{tmp_path / 'img'}:{tmp_path / 'ann'}")
    (tmp_path / "img" / "extra.png").unlink()
    _mask(tmp_path / "ann" / "03.png", np.ones((8, 8)))
    splits, _ = build_datasets(f"pairs:{tmp_path / 'img'}:{tmp_path / 'ann'}", img_size=20, num_classes=2)
    with pytest.raises(FreqkitError, match="every mask must have its image's size"):
        splits["train"][3]
    few = tmp_path / "few"
    _rgb(few / "img" / "0.png")
    _mask(few / "ann" / "0.png", labels)
    with pytest.raises(FreqkitError, match="too few"):
        build_datasets(f"pairs:{few / 'img'}:{few / 'ann'}", num_classes=2)


def test_pairs_flip_moves_image_and_mask_together(tmp_path):
    labels = np.zeros((16, 20), dtype=np.int64)
    labels[:, :10] = 1  # the bright left half of _rgb(value=0) is class 1
    for split in ("train", "val"):
        for k in range(6):
            _rgb(tmp_path / "img" / split / f"{k}.png")
            _mask(tmp_path / "ann" / split / f"{k}.png", labels)
    splits, _ = build_datasets(f"pairs:{tmp_path / 'img'}:{tmp_path / 'ann'}", img_size=20, seed=1)
    tr = splits["train"]
    flipped = 0
    for epoch in range(3):
        tr.set_epoch(epoch)
        for i in range(len(tr)):
            x, y = tr[i]
            bright = x.mean(0) > 0.5
            assert torch.equal(bright, y == 1)
            flipped += int(not bool(y[0, 0] == 1))
    assert 0 < flipped < 18


def test_spec_parser():
    assert parse_data_spec("shapes").options == {}
    s = parse_data_spec("shapes:size=32,train=8,val=4,seed=3")
    assert s.kind == "shapes" and s.options == {"size": 32, "train": 8, "val": 4, "seed": 3} and s.task == "segmentation"
    assert parse_data_spec("textures:classes=4").task == "classification"
    assert parse_data_spec("pairs:/a/b:/c/d").paths == ("/a/b", "/c/d")
    assert parse_data_spec("ADE20K:/x").kind == "ade20k"
    for bad, msg in [
        ("coco:/x", "unknown dataset 'coco'"),
        ("shapes:sz=3", "bad option"),
        ("shapes:size=big", "must be an integer"),
        ("pairs:/only", "pairs:IMAGES_DIR:MASKS_DIR"),
        ("imagefolder", "needs a folder"),
        ("", "data is empty"),
    ]:
        with pytest.raises(FreqkitError, match=msg):
            parse_data_spec(bad)


def test_builtin_specs_build_splits():
    splits, info = build_datasets("shapes:size=32,train=8,val=4")
    assert (len(splits["train"]), len(splits["val"]), info.num_classes, info.img_size) == (8, 4, 5, 32)
    with pytest.raises(FreqkitError, match="contradicts size=32"):
        build_datasets("shapes:size=32", img_size=64)
    splits, info = build_datasets("textures:classes=3,train=5,val=5", img_size=24)
    assert info.num_classes == 3 and splits["val"][0][0].shape == (3, 24, 24)
    with pytest.raises(FreqkitError, match="at least 1"):
        build_datasets("shapes:val=0")
