"""Every bad input through the CLI: exit code 2 and one line on stderr, naming the flag."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from freqkit.cli import main

TINY = "shapes:size=32,train=8,val=4"


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--workers", "-1"], "--workers must be >= 0, got -1"),
        (["--eval-every", "-1"], "--eval-every must be >= 0"),
        (["--ckpt-every", "-1"], "--ckpt-every must be >= 0"),
        (["--log-every", "0"], "--log-every must be >= 1"),
        (["--img-size", "20000", "--data", "shapes"], "--img-size must be in 8..4096, got 20000"),
        (["--img-size", "30", "--data", "shapes:train=8,val=4"], "cannot take 30x30 images"),
        (["--device", "gpu0"], "--device 'gpu0' is not a device"),
    ],
)
def test_train_settings(tmp_path, capsys, argv, message):
    code = main(
        [
            "train",
            "--model",
            "vit_micro",
            "--data",
            TINY,
            "--steps",
            "1",
            "--batch-size",
            "2",
            "--no-progress",
            "--out",
            str(tmp_path / "o"),
            *argv,
        ]
    )
    assert code == 2
    line = _one_error_line(capsys)
    assert line.startswith("freqkit train: error:") and message in line


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


def test_train_out_is_a_file(tmp_path, capsys):
    (tmp_path / "run").write_text("x")
    assert _train(tmp_path) == 2
    assert "is a file, not a folder" in _one_error_line(capsys)


def test_resume_with_a_damaged_checkpoint(tmp_path, capsys):
    assert _train(tmp_path, "--stop-at", "1") == 0
    capsys.readouterr()
    (tmp_path / "run" / "checkpoint" / "state.json").write_text("{not json")
    assert _train(tmp_path, "--resume") == 2
    line = _one_error_line(capsys)
    assert "state.json is damaged" in line and "restart from step 0" in line


def test_eval_bad_inputs(tmp_path, capsys):
    assert _train(tmp_path) == 0
    capsys.readouterr()
    run = str(tmp_path / "run")
    assert main(["eval", run, "--batch-size", "0", "--no-progress"]) == 2
    assert "--batch-size must be at least 1, got 0" in _one_error_line(capsys)
    assert main(["eval", run, "--json", str(tmp_path), "--no-progress"]) == 2
    assert "is a folder; pass a file path" in _one_error_line(capsys)
    (tmp_path / "afile").write_text("x")
    assert main(["eval", run, "--json", str(tmp_path / "afile" / "m.json"), "--no-progress"]) == 2
    assert "afile' is a file, not a folder" in _one_error_line(capsys)
    (tmp_path / "run" / "config.json").write_text('{"model": "vit_mi')
    assert main(["eval", run, "--no-progress"]) == 2
    assert "config.json is not valid JSON" in _one_error_line(capsys)
    (tmp_path / "run" / "config.json").write_text(json.dumps(["not", "a", "dict"]))
    assert main(["eval", run, "--no-progress"]) == 2
    assert "is not a JSON object" in _one_error_line(capsys)
    assert main(["eval", f"{run}/model.safetensors", "--device", "gpu0", "--no-progress"]) == 2
    assert "--device 'gpu0'" in _one_error_line(capsys)


def test_analyze_huge_img_size_is_one_line(capsys):
    assert main(["analyze", "--img-size", "20000", "--quiet"]) == 2
    assert "--img-size 20000 20000 must be in 1..4096" in _one_error_line(capsys)
