"""``freqkit.train`` with your own model and data, ``open_run`` and ``evaluate_run`` on what it wrote."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import freqkit
from freqkit.data import build_datasets
from freqkit.errors import FreqkitError, ParameterError
from freqkit.experiment import evaluate_run, open_run

DATA = "shapes:size=32,train=8,val=4"


def test_open_run_and_evaluate_reproduce_the_final_metrics(tmp_path):
    res = freqkit.train(model="vit_micro", data=DATA, steps=2, batch_size=4, out=str(tmp_path / "r"), progress=False)
    run = open_run(tmp_path / "r")
    assert run.spec == "vit_micro" and run.metrics == pytest.approx(res.metrics)
    assert [h["step"] for h in run.history] == [2]
    net = run.model()
    for name, tensor in res.model.state_dict().items():
        assert torch.equal(net.state_dict()[name], tensor), name
    again = evaluate_run(tmp_path / "r")
    assert {k: again[k] for k in res.metrics} == pytest.approx(res.metrics, rel=1e-6)
    # the weights file alone carries its config in the safetensors metadata
    assert open_run(tmp_path / "r" / "model.safetensors").config == json.loads((tmp_path / "r" / "config.json").read_text())


def test_train_with_your_own_model_and_datasets(tmp_path):
    splits, info = build_datasets(DATA)

    class Tiny(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, info.num_classes, 3, padding=1)

        def forward(self, x):
            return self.conv(x)

    torch.manual_seed(0)
    net = Tiny()
    res = freqkit.train(
        freqkit.TrainConfig(
            task="segmentation",
            num_classes=info.num_classes,
            steps=3,
            batch_size=4,
            out=str(tmp_path / "t"),
            progress=False,
            model="tiny",
        ),
        model=net,
        datasets=splits,
    )
    assert res.model is net and res.steps_done == 3 and 0.0 <= res.metrics["miou"] <= 1.0
    with pytest.raises(ParameterError, match="task and num_classes"):
        freqkit.train(model=Tiny(), datasets=splits, steps=1, out=str(tmp_path / "u"))
    with pytest.raises(ParameterError, match="^stepz is not a TrainConfig field"):
        freqkit.train(stepz=3)


def test_open_run_refuses_what_is_not_a_run(tmp_path):
    (tmp_path / "w.pt").write_bytes(b"x")
    with pytest.raises(FreqkitError, match="not a .safetensors file"):
        open_run(tmp_path / "w.pt")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "model.safetensors").write_bytes(b"junk")
    (tmp_path / "d" / "config.json").write_text("{broken")
    with pytest.raises(FreqkitError, match="is not valid JSON"):
        open_run(tmp_path / "d")
