"""``freqkit.compare`` and ``freqkit compare``, shrunk (2 steps, 32 x 32 images, 2 seeds): the report, its numbers, bad input."""

from __future__ import annotations

import json
import statistics

import pytest

from freqkit.cli import main
from freqkit.experiment import Comparison, compare, parse_seeds


def test_compare_writes_a_consistent_report(tmp_path, capsys):
    out = tmp_path / "cmp"
    argv = [
        "compare",
        "--models",
        "vit_micro,vit_micro+fdam",
        "--data",
        "shapes:size=32,train=8,val=4",
        "--steps",
        "2",
        "--batch-size",
        "4",
        "--seeds",
        "2",
        "--analyze-images",
        "3",
        "--no-progress",
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    stdout = capsys.readouterr().out
    assert "vit_micro+fdam" in stdout and "report.html" in stdout

    results = json.loads((out / "results.json").read_text())
    assert results["settings"]["seeds"] == [0, 1] and results["settings"]["task"] == "segmentation"
    assert results["settings"]["call"].startswith("freqkit.compare(['vit_micro', 'vit_micro+fdam']")
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
    # the delta column is each model's mean minus the first (baseline) model's mean
    base, fdam = results["summary"]["vit_micro"]["miou"], results["summary"]["vit_micro+fdam"]["miou"]
    assert fdam["delta"] == pytest.approx(fdam["mean"] - base["mean"])
    assert Comparison.from_json(out / "results.json").summary == results["summary"]

    page = (out / "report.html").read_text()
    assert "vit_micro+fdam" in page and "boundary_f1" in page and page.count("data:image/png;base64,") == 4
    # over training: each run's monitor history (steps 0 and the last), drawn as the mean over seeds per layer
    from freqkit.monitor import load_history

    histories = [load_history(out / "runs" / "vit_micro" / f"seed{s}" / "monitor.jsonl") for s in (0, 1)]
    assert [r["monitor"]["hf_ratio"] for r in results["runs"]["vit_micro"]] == [h.series("hf_ratio") for h in histories]
    assert histories[0].steps == [0, 2] and (out / "over_training.png").is_file()
    lines = Comparison.from_json(out / "results.json").plot()["over_training"].axes[0].lines
    assert len(lines) == 4 and list(lines[0].get_xdata()) == [0, 2]
    assert list(lines[0].get_ydata()) == pytest.approx([statistics.fmean(h[i]["hf_ratio"][0] for h in histories) for i in (0, 1)])
    assert "<h2>Predictions</h2>" in page and (out / "predictions.png").is_file()
    assert results["predictions"]["models"] == ["vit_micro", "vit_micro+fdam"] and len(results["predictions"]["target"]) == 4
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


def test_compare_from_python_with_objects(tmp_path):
    """The library call of the issue runs, and a model factory (an object, not a name) trains like a spec."""
    import torch

    from freqkit.data import build_datasets
    from freqkit.models.spec import build_model

    res = compare(
        ["vit_micro", "vit_micro+fdam"],
        steps=3,
        seeds=(0,),
        out=tmp_path / "a",
        data="shapes:size=32,train=8,val=4",
        batch_size=4,
        progress=False,
        analyze_images=2,
    )
    assert set(res.summary) == {"vit_micro", "vit_micro+fdam"} and "miou" in res.table()
    assert (tmp_path / "a" / "report.html").is_file() and "<html" in res.to_html()
    again = Comparison.from_json(res.to_json())
    assert again.summary == json.loads(res.to_json())["summary"] and set(res.plot()) == {
        "spectral",
        "loss",
        "over_training",
        "predictions",
    }

    splits, info = build_datasets("shapes:size=32,train=8,val=4")
    factory = lambda: build_model("vit_micro", info.task, info.num_classes, info.img_size)  # noqa: E731
    mine = compare(
        {"mine": factory},
        data=splits,
        steps=3,
        seeds=(0,),
        out=None,
        batch_size=4,
        progress=False,
        task=info.task,
        num_classes=info.num_classes,
        analyze_images=2,
    )
    # the factory is called after seeding, so it trains exactly like the spec it builds
    assert mine.summary["mine"]["miou"]["values"] == pytest.approx(res.summary["vit_micro"]["miou"]["values"])
    assert torch.isfinite(torch.tensor(mine.summary["mine"]["hf_ratio"])).all()


def test_bad_spec_fails_before_any_training(tmp_path, capsys):
    # the second spec is wrong: nothing may train (no run folder of the first model) before the error
    argv = [
        "compare",
        "--models",
        "vit_micro,vit_micro+fdam+gfsa",
        "--data",
        "shapes:size=32,train=8,val=4",
        "--steps",
        "1",
        "--out",
        str(tmp_path / "c"),
    ]
    assert main(argv) == 2
    assert not list((tmp_path / "c").rglob("*.safetensors")) and not list((tmp_path / "c").rglob("log.jsonl"))
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_unwritable_out_is_one_line(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    argv = ["compare", "--models", "vit_micro", "--data", "shapes:size=32,train=8,val=4", "--steps", "1", "--out", str(blocker)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--out" in err[0] and "is a file" in err[0]


def test_prediction_panel_is_the_argmax_of_each_trained_model(tmp_path):
    """The panel's label maps are argmax of the (first-seed) model's logits on the first validation images."""
    import torch

    from freqkit.data import build_datasets
    from freqkit.experiment import open_run
    from freqkit.train.evaluate import input_stats, normalize

    res = compare(
        ["vit_micro"],
        steps=2,
        seeds=(0,),
        out=tmp_path,
        data="shapes:size=32,train=8,val=6",
        batch_size=4,
        progress=False,
        analyze_images=2,
        keep_checkpoints=False,
    )
    net = open_run(tmp_path / "runs" / "vit_micro" / "seed0").model()
    splits, _ = build_datasets("shapes:size=32,train=8,val=6", splits=("val",))
    x = torch.stack([splits["val"][i][0] for i in range(4)])
    with torch.no_grad():
        want = net(normalize(x, *input_stats(net))).argmax(1)
    assert torch.equal(torch.tensor(res.predictions["labels"]["vit_micro"]), want)
