"""The training loop: exact resume, outputs, both tasks, bf16 autocast; the segmentation model's pyramid."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from freqkit.errors import FreqkitError
from freqkit.models.spec import build_model
from freqkit.train import TrainConfig, train

TINY = "shapes:size=32,train=8,val=4"


def _cfg(tmp_path, name, **kw):
    base = dict(
        model="vit_micro", data=TINY, steps=5, batch_size=2, lr=3e-3, out=str(tmp_path / name), progress=False, log_every=1
    )
    base.update(kw)
    return TrainConfig(**base)


def test_interrupted_and_resumed_run_ends_with_identical_weights(tmp_path):
    # FDAM parameters (AdamW state of every group), drop-path (the RNG state) and an epoch boundary
    # inside the resumed part (8 images / batch 2 = 4 steps per epoch) all have to survive the restart
    kw = dict(model="vit_micro+fdam", drop_path=0.2, steps=6)
    full = train(_cfg(tmp_path, "full", **kw))
    part = train(_cfg(tmp_path, "split", stop_at=3, **kw))
    assert part.steps_done == 3 and not part.metrics and not (tmp_path / "split" / "model.safetensors").exists()
    state = json.loads((tmp_path / "split" / "checkpoint" / "state.json").read_text())
    assert state["step"] == 3
    resumed = train(_cfg(tmp_path, "split", resume=True, **kw))
    a = load_file(str(tmp_path / "full" / "model.safetensors"))
    b = load_file(str(tmp_path / "split" / "model.safetensors"))
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), "resumed weights differ"
    assert resumed.metrics == pytest.approx(full.metrics)
    # the log holds every step once
    steps = [
        r["step"] for r in map(json.loads, (tmp_path / "split" / "log.jsonl").read_text().splitlines()) if r["split"] == "train"
    ]
    assert steps == list(range(1, 7))


def test_resume_refuses_other_settings(tmp_path):
    train(_cfg(tmp_path, "r", stop_at=1, steps=2))
    with pytest.raises(FreqkitError, match="lr="):
        train(_cfg(tmp_path, "r", steps=2, lr=1e-2, resume=True))


def test_outputs_and_segmentation_metrics(tmp_path):
    res = train(_cfg(tmp_path, "seg", steps=2, eval_every=1))
    out = tmp_path / "seg"
    assert {"model.safetensors", "config.json", "metrics.json", "log.jsonl", "checkpoint"} <= {p.name for p in out.iterdir()}
    assert set(res.metrics) == {"miou", "pixel_acc", "boundary_f1", "loss"}
    assert all(0.0 <= res.metrics[k] <= 1.0 for k in ("miou", "pixel_acc", "boundary_f1"))
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["split"] == "val"] == [1, 2]
    assert json.loads((out / "config.json").read_text())["num_classes"] == 5


def test_loss_goes_down_when_overfitting(tmp_path):
    res = train(_cfg(tmp_path, "fit", data="shapes:size=32,train=4,val=4", batch_size=4, steps=25, lr=3e-3, warmup_steps=0))
    losses = [r["loss"] for r in res.history if r["split"] == "train"]
    assert sum(losses[-5:]) / 5 < 0.8 * sum(losses[:5]) / 5


def test_classification_with_bf16_autocast(tmp_path):
    res = train(_cfg(tmp_path, "cls", data="textures:size=32,classes=3,train=8,val=6", steps=2, amp=True))
    assert res.task == "classification" and set(res.metrics) == {"top1", "loss"}
    assert torch.isfinite(torch.tensor(res.metrics["loss"]))


def test_too_small_training_split(tmp_path):
    with pytest.raises(FreqkitError, match="fewer than one global batch"):
        train(_cfg(tmp_path, "small", data="shapes:size=32,train=1,val=1"))


def test_segmentation_model_pyramid_and_backbones():
    model = build_model("vit_micro", "segmentation", 4, 32)
    x = torch.randn(2, 3, 32, 32)
    feats = model.features(x)
    assert [f.shape[-1] for f in feats] == [8, 4, 2, 1]  # strides 4, 8, 16, 32 from a patch-8 ViT
    assert model(x).shape == (2, 4, 32, 32)
    conv = build_model("resnet18", "segmentation", 4, 32)
    assert conv(x).shape == (2, 4, 32, 32)
    with pytest.raises(FreqkitError, match="retrofit timm ViT-family"):
        build_model("resnet18+fdam", "segmentation", 4, 32)
    with pytest.raises(FreqkitError, match="unknown model"):
        build_model("not_a_model", "segmentation", 4, 32)
    with pytest.raises(FreqkitError, match="unknown method"):
        build_model("vit_micro+magic", "segmentation", 4, 32)
