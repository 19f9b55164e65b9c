"""torchrun -m freqkit train with 2 gloo processes reaches the weights of 1 process on the same global batch."""

from __future__ import annotations

import json
import subprocess

import pytest
from ddp_launch import freqkit_torchrun, torchrun_env
from safetensors.torch import load_file

from freqkit.models.spec import build_model
from freqkit.train import TrainConfig, train
from freqkit.train.setup import seed_everything

DATA = "shapes:size=32,train=8,val=4"


def test_two_gloo_processes_match_one_process(tmp_path):
    # FDAM model (AttInv + FreqScale parameters), no dropout / drop-path, no BatchNorm anywhere
    common = dict(model="vit_micro+fdam", data=DATA, steps=3, lr=3e-3, seed=0, progress=False)
    single = train(TrainConfig(batch_size=4, out=str(tmp_path / "one"), **common))

    env = torchrun_env()
    cmd = [
        *freqkit_torchrun(),
        "train",
        "--model",
        common["model"],
        "--data",
        DATA,
        "--steps",
        "3",
        "--batch-size",
        "2",
        "--lr",
        "3e-3",
        "--seed",
        "0",
        "--device",
        "cpu",
        "--no-progress",
        "--out",
        str(tmp_path / "two"),
    ]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.count("step 3:") == 1  # only rank 0 reports

    one = load_file(str(tmp_path / "one" / "model.safetensors"))
    two = load_file(str(tmp_path / "two" / "model.safetensors"))
    assert one.keys() == two.keys()
    seed_everything(0)
    init = build_model(common["model"], "segmentation", 5, 32).state_dict()
    moved = max(float((one[k] - init[k]).abs().max()) for k in one)
    gap = max(float((one[k] - two[k]).abs().max()) for k in one)
    # AdamW moves weights by ~lr per step; the two runs agree to float rounding (Adam amplifies rounding
    # of near-zero gradients, hence 1e-4 rather than 1e-7)
    assert moved > 1e-3
    assert gap < 1e-4, gap
    # evaluation shards the validation set over the processes and sums the statistics
    metrics = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert metrics["miou"] == pytest.approx(single.metrics["miou"], abs=1e-4)
    assert metrics["loss"] == pytest.approx(single.metrics["loss"], rel=1e-4)
