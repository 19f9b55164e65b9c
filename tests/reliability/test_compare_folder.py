"""compare owns its output folder: one lock for the whole comparison, safe run folder names, full histories on resume."""

from __future__ import annotations

import json

import pytest

from freqkit.errors import FreqkitError
from freqkit.experiment import compare
from freqkit.io import RunLock

TINY = dict(data="shapes:size=32,train=8,val=4", steps=2, batch_size=4, analyze_images=2, progress=False)


def test_a_second_compare_on_the_same_out_fails_before_touching_any_run(tmp_path):
    out = tmp_path / "cmp"
    compare(["vit_micro"], out=out, **TINY)
    run = out / "runs" / "vit_micro" / "seed0"
    before = {p.name: p.stat().st_mtime_ns for p in run.iterdir()}
    with RunLock(out):  # a comparison in progress on this folder (here: held by the test)
        with pytest.raises(FreqkitError, match=r"out .* is in use by another freqkit run"):
            compare(["vit_micro"], out=out, lr=3e-3, **TINY)
    assert {p.name: p.stat().st_mtime_ns for p in run.iterdir()} == before  # the finished run is untouched


def test_resume_rebuilds_a_resumed_runs_history_from_its_log(tmp_path):
    from freqkit.train import TrainConfig, train

    out = tmp_path / "cmp"
    opts = dict(TINY, steps=4)
    # what a kill after step 2 of the first run leaves: its checkpoint and a log of steps 1-2
    cfg = TrainConfig(
        model="vit_micro",
        data=opts["data"],
        steps=4,
        batch_size=4,
        seed=0,
        log_every=1,
        stop_at=2,
        progress=False,
        out=str(out / "runs" / "vit_micro" / "seed0"),
    )
    train(cfg)
    result = compare(["vit_micro"], out=out, resume=True, log_every=1, **opts)
    history = result.runs["vit_micro"][0]["history"]
    assert [h["step"] for h in history] == [1, 2, 3, 4]
    assert (out / "loss.png").is_file()
    saved = json.loads((out / "results.json").read_text())
    assert [h["step"] for h in saved["runs"]["vit_micro"][0]["history"]] == [1, 2, 3, 4]


def test_a_model_name_never_leaves_out(tmp_path):
    out = tmp_path / "cmp"
    result = compare({"..": "vit_micro"}, out=out, **TINY)
    assert result.runs[".."][0]["metrics"]
    inside = [p for p in out.rglob("model.safetensors")]
    assert len(inside) == 1 and (out / "runs") in inside[0].parents
    assert not (tmp_path / "seed0").exists() and not (out / "seed0").exists()


def test_two_names_that_share_a_folder_are_refused(tmp_path):
    with pytest.raises(FreqkitError, match=r"names 'a/b' and 'a_b' would share the folder / file name 'a_b'"):
        compare({"a/b": "vit_micro", "a_b": "vit_micro+fdam"}, out=tmp_path / "cmp", **TINY)
    assert not (tmp_path / "cmp" / "runs").exists()


def test_analyze_refuses_two_names_that_share_a_figure_file():
    import torch

    from freqkit import analyze

    m = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3))
    with pytest.raises(FreqkitError, match=r"would share the folder / file name"):
        analyze({"x/1": m, "x_1": m}, torch.zeros(1, 3, 8, 8), layers=["0"])
