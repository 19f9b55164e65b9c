"""train fails early and loudly: divergence stops (or skips), bad data fails before step 1, finished runs are kept."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

import freqkit.cli as cli
from freqkit.errors import FreqkitError
from freqkit.train import TrainConfig, train

TINY = "shapes:size=32,train=8,val=4"


def _cfg(tmp_path, **kw) -> TrainConfig:
    base = dict(model="vit_micro", data=TINY, steps=3, batch_size=2, out=str(tmp_path / "run"), progress=False)
    base.update(kw)
    return TrainConfig(**base)


def _records(folder) -> list[dict]:
    log = folder / "log.jsonl"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def test_a_diverging_run_stops_naming_the_step_and_saves_no_nan(tmp_path):
    # lr 1e30 without clipping: step 1's update is finite but huge, step 2's loss is NaN
    cfg = _cfg(tmp_path, lr=1e30, clip_grad=None, ckpt_every=1, log_every=100, steps=4)
    with pytest.raises(FreqkitError, match=r"training diverged (at|by) step \d") as err:
        train(cfg)
    assert "\n" not in str(err.value)
    ckpt = tmp_path / "run" / "checkpoint" / "model.safetensors"
    # the checkpoint of step 1 (before the divergence) is kept, and holds finite weights only
    assert all(bool(torch.isfinite(t).all()) for t in load_file(str(ckpt)).values())
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_cli_a_nan_loss_does_not_exit_0(tmp_path, capsys):
    code = cli.main(
        [
            "train",
            "--model",
            "vit_micro",
            "--data",
            TINY,
            "--steps",
            "3",
            "--batch-size",
            "2",
            "--lr",
            "1e30",
            "--clip-grad",
            "0",
            "--log-every",
            "100",
            "--no-progress",
            "--out",
            str(tmp_path / "run"),
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "diverged" in err[0], err


class _Poisoned(torch.utils.data.Dataset):
    """Random classification images; item ``bad`` is all NaN (its step's loss and gradients are NaN)."""

    def __init__(self, n: int, bad: int = -1) -> None:
        g = torch.Generator().manual_seed(0)
        self.x = torch.rand(n, 3, 32, 32, generator=g)
        self.y = torch.randint(0, 2, (n,), generator=g)
        self.bad = bad

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i):
        x = self.x[i]
        return (torch.full_like(x, float("nan")) if i == self.bad else x), int(self.y[i])


def test_nonfinite_skip_skips_the_step_and_goes_on(tmp_path):
    data = {"train": _Poisoned(4, bad=0), "val": _Poisoned(2)}
    common = dict(model="vit_micro", task="classification", num_classes=2, steps=4, batch_size=4, log_every=1, progress=False)
    with pytest.raises(FreqkitError, match="diverged at step 1"):
        train(TrainConfig(out=str(tmp_path / "stop"), **common), datasets=data)
    res = train(TrainConfig(out=str(tmp_path / "skip"), nonfinite="skip", **common), datasets=data)
    # one batch is the whole split: every step holds the NaN image, so every step is skipped and the weights never move
    skips = [r for r in _records(tmp_path / "skip") if r.get("split") == "skip"]
    assert [r["step"] for r in skips] == [1, 2, 3, 4]
    assert all(bool(torch.isfinite(p).all()) for p in res.model.parameters())
    torch.manual_seed(0)
    from freqkit.models.spec import build_model

    init = build_model("vit_micro", "classification", 2, 32).state_dict()
    assert all(torch.equal(init[k], v) for k, v in res.model.state_dict().items())


def test_a_one_class_image_folder_fails_before_training(tmp_path):
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        (tmp_path / "data" / split / "only").mkdir(parents=True)
        for i in range(4):
            Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(
                tmp_path / "data" / split / "only" / f"{i}.png"
            )
    with pytest.raises(FreqkitError, match=r"classification needs at least 2 classes"):
        train(_cfg(tmp_path, data=f"imagefolder:{tmp_path / 'data'}", img_size=32, log_every=1))
    assert _records(tmp_path / "run") == []  # not one step trained


def _pairs(root, n: int = 12, size: int = 32):
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        (root / "img" / split).mkdir(parents=True)
        (root / "ann" / split).mkdir(parents=True)
        for i in range(n if split == "train" else 2):
            Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(root / "img" / split / f"{i:02d}.png")
            Image.fromarray(rng.integers(0, 3, (size, size), dtype=np.uint8)).save(root / "ann" / split / f"{i:02d}.png")


@pytest.mark.parametrize(
    "bad, message",
    [
        (lambda p: Image.fromarray(np.zeros((16, 32), np.uint8)).save(p), r"mask .*11.png is 32x16 but image .*11.png is 32x32"),
        (lambda p: Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(p), r"mask .*11.png has mode RGB"),
    ],
)
def test_bad_training_masks_fail_at_the_header_check(tmp_path, bad, message):
    _pairs(tmp_path)
    bad(tmp_path / "ann" / "train" / "11.png")  # one of 12 training pairs: a 1-step run would likely never draw it
    cfg = _cfg(tmp_path, data=f"pairs:{tmp_path / 'img'}:{tmp_path / 'ann'}", num_classes=3, img_size=32, steps=1, log_every=1)
    with pytest.raises(FreqkitError, match=message):
        train(cfg)
    assert _records(tmp_path / "run") == []


def test_a_jpeg_mask_is_named_as_a_jpeg(tmp_path):
    _pairs(tmp_path)
    mask = tmp_path / "ann" / "train" / "03.png"
    Image.open(mask).save(mask.with_suffix(".jpg"))
    mask.unlink()
    cfg = _cfg(tmp_path, data=f"pairs:{tmp_path / 'img'}:{tmp_path / 'ann'}", num_classes=3, img_size=32)
    with pytest.raises(FreqkitError, match=r"mask .*03.jpg of image .*03.png is a .jpg file; .*save it as PNG") as err:
        train(cfg)
    assert "has no mask" not in str(err.value)


def test_a_changed_data_folder_does_not_resume(tmp_path):
    _pairs(tmp_path, n=8)
    cfg = _cfg(tmp_path, data=f"pairs:{tmp_path / 'img'}:{tmp_path / 'ann'}", num_classes=3, img_size=32, steps=4, stop_at=2)
    train(cfg)
    for sub in ("img", "ann"):  # same count, same first and last name: only a rename in the middle
        (tmp_path / sub / "train" / "03.png").rename(tmp_path / sub / "train" / "03b.png")
    with pytest.raises(FreqkitError, match=r"the train data changed since it was saved \(files renamed, replaced or resized\)"):
        train(_cfg(tmp_path, data=cfg.data, num_classes=3, img_size=32, steps=4, resume=True))


def test_a_finished_run_is_not_wiped_by_a_run_without_resume(tmp_path):
    train(_cfg(tmp_path, log_every=1))
    before = (tmp_path / "run" / "log.jsonl").read_text()
    with pytest.raises(FreqkitError, match=r"already holds a run .*pass resume=True .*overwrite=True"):
        train(_cfg(tmp_path, log_every=1, lr=2e-3))
    assert (tmp_path / "run" / "log.jsonl").read_text() == before  # nothing deleted
    train(_cfg(tmp_path, log_every=1, lr=2e-3, overwrite=True))  # on purpose: replaced
    assert (tmp_path / "run" / "log.jsonl").read_text() != before
