"""``freqkit train`` and ``freqkit eval``: a tiny run end to end, and one clear line for every bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from freqkit.cli import main

TINY = "shapes:size=32,train=8,val=4"


def _train(tmp_path: Path, *extra: str) -> int:
    return main(
        [
            "train",
            "--model",
            "vit_micro",
            "--data",
            TINY,
            "--steps",
            "2",
            "--batch-size",
            "4",
            "--no-progress",
            "--out",
            str(tmp_path / "run"),
            *extra,
        ]
    )


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_train_then_eval(tmp_path, capsys):
    assert _train(tmp_path) == 0
    out = capsys.readouterr().out
    assert "vit_micro step 2: miou" in out
    trained = json.loads((tmp_path / "run" / "metrics.json").read_text())
    # eval of the run folder reproduces the training run's final metrics
    assert main(["eval", str(tmp_path / "run"), "--no-progress", "--json", str(tmp_path / "m.json")]) == 0
    evaluated = json.loads((tmp_path / "m.json").read_text())
    for k in ("miou", "boundary_f1", "pixel_acc"):
        assert evaluated[k] == pytest.approx(trained[k], abs=1e-6)
    # a bare weights file carries its config in the safetensors metadata
    assert main(["eval", str(tmp_path / "run" / "model.safetensors"), "--no-progress"]) == 0
    assert "miou" in capsys.readouterr().out


def test_stop_and_resume_from_the_cli(tmp_path, capsys):
    assert _train(tmp_path, "--stop-at", "1") == 0
    assert "stopped at step 1" in capsys.readouterr().out
    assert _train(tmp_path, "--resume") == 0
    assert "step 2:" in capsys.readouterr().out


def _pairs(root: Path, top: int) -> None:
    labels = np.zeros((32, 32), dtype=np.uint8)
    labels[8:] = top
    for split in ("train", "val"):
        for k in range(4):
            (root / "img" / split).mkdir(parents=True, exist_ok=True)
            (root / "ann" / split).mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.full((32, 32, 3), 60 * k, np.uint8)).save(root / "img" / split / f"{k}.png")
            Image.fromarray(labels, mode="L").save(root / "ann" / split / f"{k}.png")


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "--data", "coco:/x"], "unknown dataset 'coco'"),
        (["train", "--data", "imagefolder:/does/not/exist"], "does not exist"),
        (["train", "--data", "ade20k:{tmp}"], "not an ADE20K folder"),
        (["train", "--model", "vit_nope"], "unknown model 'vit_nope'"),
        (["train", "--model", "vit_micro+fdma"], "unknown method 'fdma'"),
        (["train", "--data", "textures", "--task", "segmentation"], "classification dataset but the task is segmentation"),
        (["train", "--data", TINY, "--num-classes", "3"], "has 5 classes but 3"),
        (["train", "--data", "shapes:size=32,train=1", "--batch-size", "4"], "fewer than one global batch"),
        (["train", "--data", "imagefolder:{tmp}/empty"], "the split is empty"),
        (["eval", "{tmp}/missing"], "does not exist"),
        (["eval", "{tmp}"], "has no model.safetensors"),
    ],
)
def test_bad_input_gives_one_line(tmp_path, capsys, argv, message):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    for split in ("train", "val"):
        (tmp_path / "empty" / split / "some_class").mkdir(parents=True)
    if argv[0] == "train":
        argv += ["--steps", "1", "--no-progress", "--out", str(tmp_path / "o")]
    assert main(argv) == 2
    line = _one_error_line(capsys)
    assert line.startswith(f"freqkit {argv[0]}: error:") and message in line


def test_eval_on_data_with_a_different_class_count(tmp_path, capsys):
    assert _train(tmp_path) == 0
    capsys.readouterr()
    _pairs(tmp_path / "p", top=7)
    assert (
        main(
            ["eval", str(tmp_path / "run"), "--data", f"pairs:{tmp_path / 'p' / 'img'}:{tmp_path / 'p' / 'ann'}", "--no-progress"]
        )
        == 2
    )
    assert "class index 7 but the dataset has 5 classes" in _one_error_line(capsys)
    _pairs(tmp_path / "q", top=3)  # labels fit the model's 5 classes: evaluation runs
    assert (
        main(
            ["eval", str(tmp_path / "run"), "--data", f"pairs:{tmp_path / 'q' / 'img'}:{tmp_path / 'q' / 'ann'}", "--no-progress"]
        )
        == 0
    )
    capsys.readouterr()
    (tmp_path / "cls" / "train" / "a").mkdir(parents=True)
    assert main(["eval", str(tmp_path / "run"), "--data", f"imagefolder:{tmp_path / 'cls'}"]) == 2
    assert "classification dataset but the task is segmentation" in _one_error_line(capsys)
