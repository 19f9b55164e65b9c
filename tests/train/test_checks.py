"""Bad settings and bad data fail before training with one line naming the parameter; a failing final evaluation loses nothing."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from freqkit.errors import FreqkitError
from freqkit.train import TrainConfig, train
from freqkit.train.distributed import resolve_device
from freqkit.train.metrics import build_metrics

TINY = "shapes:size=32,train=8,val=4"


def _cfg(tmp_path, **kw) -> TrainConfig:
    base = dict(model="vit_micro", data=TINY, steps=2, batch_size=2, out=str(tmp_path / "run"), progress=False)
    base.update(kw)
    return TrainConfig(**base)


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("num_workers", -1, "num_workers must be >= 0, got -1"),
        ("eval_every", -1, "eval_every must be >= 0"),
        ("ckpt_every", -2, "ckpt_every must be >= 0"),
        ("log_every", 0, "log_every must be >= 1, got 0"),
        ("eval_batch_size", 0, "eval_batch_size must be >= 1"),
        ("img_size", 20000, "img_size must be in 8..4096, got 20000"),
        ("img_size", 4, "img_size must be in 8..4096"),
        ("num_classes", 0, "num_classes must be >= 1"),
        ("drop_path", 1.0, "drop_path must be in [0, 1)"),
        ("lr", float("nan"), "lr must be a positive number"),
        ("device", "gpu0", "device 'gpu0' is not a device"),
    ],
)
def test_settings_are_range_checked(tmp_path, field, value, message):
    with pytest.raises(FreqkitError) as err:
        train(_cfg(tmp_path, **{field: value}))
    assert message in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "run").exists()  # refused before anything was written


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_a_gpu_is_one_line():
    with pytest.raises(FreqkitError, match=r"device 'cuda' but CUDA is not available"):
        resolve_device("cuda")
    with pytest.raises(FreqkitError, match=r"device 'cuda:1' but CUDA is not available"):
        resolve_device("cuda:1")
    assert resolve_device("auto") == torch.device("cpu")


def test_image_size_the_model_cannot_take_fails_before_training(tmp_path):
    with pytest.raises(FreqkitError, match=r"vit_micro cannot take 30x30 images \(patch size 8\).*multiple of 32"):
        train(_cfg(tmp_path, data="shapes:size=30,train=8,val=4"))
    assert not (tmp_path / "run" / "checkpoint").exists()


def test_out_that_is_a_file_or_read_only_fails_first(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(FreqkitError, match=r"^out .*is a file, not a folder"):
        train(_cfg(tmp_path, out=str(tmp_path / "file")))
    if not (hasattr(os, "geteuid") and os.geteuid() == 0):
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        try:
            with pytest.raises(FreqkitError, match=r"^out .*is not a writable folder"):
                train(_cfg(tmp_path, out=str(ro / "run")))
        finally:
            ro.chmod(0o700)


@pytest.mark.skipif(sys.platform == "win32", reason="fcntl locks")
def test_a_folder_in_use_by_another_run_is_refused(tmp_path):
    from freqkit.io import RunLock

    with RunLock(tmp_path / "run"):
        with pytest.raises(FreqkitError, match=r"is in use by another freqkit run"):
            train(_cfg(tmp_path))
    train(_cfg(tmp_path))  # free again


def _pairs(root: Path, val_mask=None, val_image_bytes=None, n=4) -> str:
    lab = np.zeros((32, 32), np.uint8)
    lab[16:] = 1
    for split in ("train", "val"):
        (root / "img" / split).mkdir(parents=True, exist_ok=True)
        (root / "ann" / split).mkdir(parents=True, exist_ok=True)
        for k in range(n):
            Image.fromarray(np.full((32, 32, 3), 40 * k, np.uint8)).save(root / "img" / split / f"{k}.png")
            Image.fromarray(lab).save(root / "ann" / split / f"{k}.png")
    if val_mask is not None:
        Image.fromarray(val_mask).save(root / "ann" / "val" / "3.png")
    if val_image_bytes is not None:
        (root / "img" / "val" / "3.png").write_bytes(val_image_bytes)
    return f"pairs:{root / 'img'}:{root / 'ann'}"


def test_bad_validation_data_fails_before_training(tmp_path):
    bad = np.zeros((32, 32), np.uint8)
    bad[0, 0] = 9  # class 9 of a 2-class set
    with pytest.raises(FreqkitError, match=r"mask .*3\.png has class index 9 but the dataset has 2 classes"):
        train(_cfg(tmp_path, data=_pairs(tmp_path / "a", val_mask=bad)))
    assert not (tmp_path / "run" / "checkpoint").exists() and not (tmp_path / "run" / "log.jsonl").exists()
    with pytest.raises(FreqkitError, match=r"cannot read image .*3\.png"):
        train(_cfg(tmp_path, data=_pairs(tmp_path / "b", val_image_bytes=b"\x89PNG\r\n\x1a\n garbage")))
    assert not (tmp_path / "run" / "checkpoint").exists()


def test_a_16_bit_mask_with_a_stray_id_is_not_60001_classes(tmp_path):
    stray = np.zeros((32, 32), np.uint16)
    stray[5, 5] = 60000
    root = tmp_path / "p"
    data = _pairs(root)
    Image.fromarray(stray).save(root / "ann" / "train" / "0.png")
    with pytest.raises(
        FreqkitError, match=r"label 60000, which would mean 60001 classes .*declare the class count with num_classes"
    ):
        train(_cfg(tmp_path, data=data))
    with pytest.raises(FreqkitError, match=r"num_classes=60001 is more than 4096 segmentation classes"):
        build_metrics("segmentation", 60001)
    with pytest.raises(FreqkitError, match=r"num_classes=60001 is more than 4096"):  # declared: refused before training
        train(_cfg(tmp_path, data=data, num_classes=60001))
    assert not (tmp_path / "run" / "checkpoint").exists()
    assert build_metrics("classification", 60001) is not None  # top-1 needs no K x K matrix


def test_the_final_model_is_saved_before_the_final_evaluation(tmp_path, monkeypatch):
    import freqkit.train.loop as loop

    def broken(*args, **kwargs):
        raise FreqkitError("evaluation failed")

    monkeypatch.setattr(loop, "evaluate", broken)
    with pytest.raises(FreqkitError, match="evaluation failed"):
        train(_cfg(tmp_path))
    out = tmp_path / "run"
    assert (out / "model.safetensors").is_file() and json.loads((out / "config.json").read_text())["steps"] == 2
    assert json.loads((out / "checkpoint" / "state.json").read_text())["step"] == 2
    monkeypatch.undo()
    res = train(_cfg(tmp_path, resume=True))  # the finished run only evaluates again
    assert set(res.metrics) >= {"miou"} and (out / "metrics.json").is_file()


def test_a_worker_error_is_one_line(tmp_path):
    root = tmp_path / "p"
    data = _pairs(root)
    good = (root / "img" / "train" / "1.png").read_bytes()
    (root / "img" / "train" / "1.png").write_bytes(good[: len(good) // 2])  # the header opens, the pixels do not
    with pytest.raises(FreqkitError) as err:
        train(_cfg(tmp_path, data=data, num_workers=1, steps=4))
    msg = str(err.value)
    assert "\n" not in msg and "Traceback" not in msg and msg.startswith("cannot read image") and "1.png" in msg


def test_preflight_finds_a_bad_model_before_any_run_trains(tmp_path, monkeypatch):
    import freqkit.train.loop as loop
    from freqkit.train import preflight

    calls = []
    monkeypatch.setattr(loop, "_train", lambda *a: calls.append(a))
    specs = ["vit_micro", "vit_micro+fdam", "vit_micro+fdam+gfsa"]
    cfgs = [_cfg(tmp_path, model=m, out=str(tmp_path / "runs" / str(i))) for i, m in enumerate(specs)]
    with pytest.raises(FreqkitError, match=r"'fdam', 'gfsa'\] both need the attn filter"):
        preflight(cfgs)
    with pytest.raises(FreqkitError, match=r"resnet18 is ResNet"):
        preflight([_cfg(tmp_path, model="resnet18+fdam")])
    assert [c.model for c in preflight(cfgs[:2])] == specs[:2]
    (tmp_path / "afile").write_text("x")
    with pytest.raises(FreqkitError, match=r"^out .*is a file"):
        preflight([_cfg(tmp_path, out=str(tmp_path / "afile"))])
    assert not calls
