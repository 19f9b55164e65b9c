"""``freqkit compare``, shrunk (2 steps, 32 x 32 images, 2 seeds): the report, its numbers and bad input."""
from __future__ import annotations

import json
import statistics

import pytest

from freqkit.cli import main
from freqkit.cli.compare import parse_seeds


def test_compare_writes_a_consistent_report(tmp_path, capsys):
    out = tmp_path / "cmp"
    argv = ["compare", "--models", "vit_micro,vit_micro+fdam", "--data", "shapes:size=32,train=8,val=4", "--steps", "2",
            "--batch-size", "4", "--seeds", "2", "--analyze-images", "3", "--no-progress", "--out", str(out)]
    assert main(argv) == 0
    stdout = capsys.readouterr().out
    assert "vit_micro+fdam" in stdout and "report.html" in stdout

    results = json.loads((out / "results.json").read_text())
    assert results["settings"]["seeds"] == [0, 1] and results["settings"]["task"] == "segmentation"
    assert results["settings"]["command"].startswith("freqkit compare --models vit_micro,vit_micro+fdam")
    for name in ("vit_micro", "vit_micro+fdam"):
        runs = results["runs"][name]
        assert [r["seed"] for r in runs] == [0, 1]
        values = [r["metrics"]["miou"] for r in runs]
        # the table's numbers are the mean and sample spread of the per-seed runs
        row = results["summary"][name]
        assert row["miou"]["mean"] == pytest.approx(statistics.fmean(values))
        assert row["miou"]["std"] == pytest.approx(statistics.stdev(values))
        # spectral curves: one value per ViT block, averaged over seeds
        assert len(row["hf_ratio"]) == 4 and len(row["cosine_similarity"]) == 4
        assert row["hf_ratio"] == pytest.approx([statistics.fmean(v) for v in zip(*(r["hf_ratio"] for r in runs))])
        assert (out / "runs" / name.replace("+", "_") / "seed1" / "model.safetensors").is_file()
        assert not (out / "runs" / name.replace("+", "_") / "seed1" / "checkpoint").exists()
    assert results["summary"]["vit_micro"]["miou"]["delta"] == 0.0

    page = (out / "report.html").read_text()
    assert "vit_micro+fdam" in page and "boundary_f1" in page and page.count("data:image/png;base64,") == 2
    assert (out / "spectral.png").stat().st_size > 0 and (out / "analysis" / "report.html").is_file()
    from freqkit.analysis import Report

    rep = Report.from_json(out / "analysis" / "report.json")
    assert rep.names == ["vit_micro", "vit_micro+fdam"]
    # the full report of seed 0 carries the same curve that results.json lists for seed 0
    assert rep["vit_micro+fdam"].series("hf_ratio") == pytest.approx(results["runs"]["vit_micro+fdam"][0]["hf_ratio"])

    # --resume reuses the finished runs (same settings): no training, the same numbers
    capsys.readouterr()
    assert main(argv + ["--resume"]) == 0
    assert capsys.readouterr().err.count("reusing the finished run") == 4
    again = json.loads((out / "results.json").read_text())
    for name in ("vit_micro", "vit_micro+fdam"):
        assert again["summary"][name]["miou"] == results["summary"][name]["miou"]
        assert again["summary"][name]["hf_ratio"] == pytest.approx(results["summary"][name]["hf_ratio"])
    # runs of other settings (here 3 steps instead of 2) are not reused
    changed = list(argv)
    changed[changed.index("--steps") + 1] = "3"
    assert main(changed + ["--resume"]) == 0
    assert "reusing" not in capsys.readouterr().err


def test_parse_seeds():
    assert parse_seeds("3") == [0, 1, 2]
    assert parse_seeds("0,5,7") == [0, 5, 7]
    assert parse_seeds("4,") == [4]


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--models", "vit_micro,warp_drive"], "unknown model 'warp_drive'"),
        (["--models", "vit_micro,vit_micro"], "repeats a model"),
        (["--seeds", "0"], "--seeds '0'"),
        (["--seeds", "1,1"], "list each seed once"),
        (["--data", "pairs:/nope"], "pairs:IMAGES_DIR:MASKS_DIR"),
    ],
)
def test_bad_input_gives_one_line(tmp_path, capsys, extra, message):
    argv = ["compare", "--models", "vit_micro", "--data", "shapes:size=32,train=8,val=4", "--steps", "1", "--out", str(tmp_path)]
    assert main(argv + extra) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("freqkit compare: error:") and message in err[0]
