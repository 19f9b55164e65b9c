"""freqkit train watches itself: monitor.jsonl (bitwise-neutral, exact across resume) and --tensorboard events."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from freqkit.analysis import analyze
from freqkit.cli import main
from freqkit.monitor import load_history
from freqkit.train import TrainConfig, train
from freqkit.train.evaluate import input_stats, normalize
from freqkit.train.monitoring import probe_images

TINY = "shapes:size=32,train=8,val=4"


def _cfg(tmp_path, name, **kw):
    base = {
        "model": "vit_micro",
        "data": TINY,
        "steps": 6,
        "batch_size": 2,
        "lr": 3e-3,
        "out": str(tmp_path / name),
        "progress": False,
        "monitor_every": 2,
        "drop_path": 0.2,
    }
    base.update(kw)
    return TrainConfig(**base)


def test_monitor_changes_no_weight_and_records_analyze_of_the_final_model(tmp_path):
    watched = train(_cfg(tmp_path, "on"))
    train(_cfg(tmp_path, "off", monitor_every=0))
    a, b = load_file(str(tmp_path / "on" / "model.safetensors")), load_file(str(tmp_path / "off" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # drop-path draws from the RNG: still equal
    assert not (tmp_path / "off" / "monitor.jsonl").exists()
    history = load_history(tmp_path / "on" / "monitor.jsonl")
    assert history.steps == [0, 2, 4, 6] and history.layers == [f"blocks.{i}" for i in range(4)]
    # the last record is analyze of the trained backbone on the first validation images, one batch (2) of them
    from freqkit.data import build_datasets

    ds, _ = build_datasets(TINY, splits=("val",))
    net = watched.model.encoder
    x = normalize(probe_images(ds["val"], 2), *input_stats(watched.model))
    assert history.settings["probe_images"] == 2
    truth = analyze(net, x, cka=False, methods=False).models[0]
    for key in ("hf_ratio", "cosine_similarity", "effective_rank"):
        assert history[-1][key] == pytest.approx(truth.series(key), rel=1e-5), key


def test_resumed_run_has_each_record_once_and_equal_to_an_uninterrupted_run(tmp_path):
    train(_cfg(tmp_path, "full", steps=7, monitor_every=3))
    train(_cfg(tmp_path, "split", steps=7, monitor_every=3, stop_at=4))
    path = tmp_path / "split" / "monitor.jsonl"
    assert load_history(path).steps == [0, 3]
    # the interrupted run went on past its checkpoint (step 4) before it was killed: a record and a torn line
    with open(path, "a") as fh:
        fh.write(
            json.dumps({"step": 6, "hf_ratio": [0.0] * 4, "cosine_similarity": [0.0] * 4, "effective_rank": [0.0] * 4}) + "\n"
        )
        fh.write('{"step": 7, "hf_')
    train(_cfg(tmp_path, "split", steps=7, monitor_every=3, resume=True))
    full, split = load_history(tmp_path / "full" / "monitor.jsonl"), load_history(path)
    assert split.steps == [0, 3, 6, 7] == full.steps  # every 3 steps and the final step
    assert split.records == full.records


def test_cli_tensorboard_writes_loss_lr_metrics_and_monitor_scalars(tmp_path, capsys):
    ea = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    tb = tmp_path / "tb"
    assert (
        main(
            [
                "train",
                "--model",
                "vit_micro",
                "--data",
                TINY,
                "--steps",
                "4",
                "--batch-size",
                "2",
                "--no-progress",
                "--log-every",
                "2",
                "--eval-every",
                "2",
                "--monitor-every",
                "2",
                "--tensorboard",
                str(tb),
                "--out",
                str(tmp_path / "run"),
            ]
        )
        == 0
    )
    acc = ea.EventAccumulator(str(tb))
    acc.Reload()
    scalars = acc.Tags()["scalars"]
    assert {
        "train/loss",
        "train/lr",
        "val/miou",
        "val/loss",
        "spectral/hf_ratio/block00",
        "spectral/cosine_similarity/block03",
    } <= set(scalars)
    assert [e.step for e in acc.Scalars("train/loss")] == [2, 4]
    assert [e.step for e in acc.Scalars("val/miou")] == [2, 4]
    hf = acc.Scalars("spectral/hf_ratio/block02")
    history = load_history(tmp_path / "run" / "monitor.jsonl")
    assert [e.step for e in hf] == history.steps == [0, 2, 4]
    assert [e.value for e in hf] == pytest.approx([r["hf_ratio"][2] for r in history], rel=1e-6)
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert acc.Scalars("train/loss")[-1].value == pytest.approx([r["loss"] for r in log if r["split"] == "train"][-1], rel=1e-6)


def test_bad_monitor_settings_name_the_flag(tmp_path, capsys):
    assert main(["train", "--data", TINY, "--monitor-every", "-1", "--out", str(tmp_path / "r")]) == 2
    assert "--monitor-every must be >= 0" in capsys.readouterr().err
    (tmp_path / "file").write_text("x")
    assert (
        main(
            [
                "train",
                "--data",
                TINY,
                "--steps",
                "1",
                "--no-progress",
                "--tensorboard",
                str(tmp_path / "file"),
                "--out",
                str(tmp_path / "r"),
            ]
        )
        == 2
    )
    assert "--tensorboard" in capsys.readouterr().err


def test_compare_gives_each_run_its_own_tensorboard_folder(tmp_path):
    ea = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    from freqkit.experiment import compare

    compare(
        ["vit_micro"],
        data=TINY,
        steps=2,
        seeds=2,
        out=tmp_path / "cmp",
        batch_size=2,
        progress=False,
        analyze_images=2,
        tensorboard=str(tmp_path / "tb"),
    )
    for seed in (0, 1):
        acc = ea.EventAccumulator(str(tmp_path / "tb" / "vit_micro" / f"seed{seed}"))
        acc.Reload()
        history = load_history(tmp_path / "cmp" / "runs" / "vit_micro" / f"seed{seed}" / "monitor.jsonl")
        assert [e.value for e in acc.Scalars("spectral/hf_ratio/block00")] == pytest.approx(
            [r["hf_ratio"][0] for r in history], rel=1e-6
        )


class _Flat(torch.nn.Module):
    """A segmenter with no blocks or stages the probe knows: it trains, the monitor steps aside."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 5, 3, padding=1)
        self.pretrained_cfg = {"mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def test_a_network_the_monitor_cannot_read_still_trains(tmp_path):
    with pytest.warns(UserWarning, match="spectral monitor is off"):
        res = train(_cfg(tmp_path, "flat", task="segmentation", num_classes=5, drop_path=0.0), model=_Flat())
    assert res.steps_done == 6 and not (tmp_path / "flat" / "monitor.jsonl").exists()
