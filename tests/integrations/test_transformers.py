"""Hugging Face Trainer: a tiny CPU fit with SpectralMonitorCallback writes hf_ratio scalars that TensorBoard reads back."""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")  # the Trainer needs it
pytest.importorskip("tensorboard")

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

from freqkit.analysis import analyze  # noqa: E402
from freqkit.integrations.transformers import SpectralMonitorCallback  # noqa: E402


class _Images(torch.utils.data.Dataset):
    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict:
        return {"pixel_values": self.x[i], "labels": self.y[i]}


def test_trainer_fit_logs_hf_ratio_to_tensorboard(tmp_path):
    torch.manual_seed(0)
    cfg = transformers.ViTConfig(
        image_size=32,
        patch_size=8,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        num_labels=3,
    )
    model = transformers.ViTForImageClassification(cfg)
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(8, 3, 32, 32, generator=g), torch.randint(0, 3, (8,), generator=g)
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / "out"),
        max_steps=4,
        per_device_train_batch_size=2,
        learning_rate=1e-2,
        use_cpu=True,
        report_to=["tensorboard"],
        logging_steps=2,
        save_strategy="no",
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    cb = SpectralMonitorCallback(x[:2], every=2)
    trainer = transformers.Trainer(model=model, args=args, train_dataset=_Images(x, y), callbacks=[cb])
    trainer.train()
    assert cb.monitor.history.steps == [0, 2, 4]
    truth = analyze(model, x[:2], cka=False, methods=False).models[0].series("hf_ratio")
    assert cb.monitor.history[-1]["hf_ratio"] == pytest.approx(truth, rel=1e-5)
    runs = list((tmp_path / "out" / "runs").iterdir())
    assert len(runs) == 1  # the monitor's scalars land in the Trainer's own TensorBoard run
    acc = EventAccumulator(str(runs[0]))
    acc.Reload()
    scalars = acc.Tags()["scalars"]
    tag = "train/spectral/hf_ratio/block01"
    assert tag in scalars and "train/loss" in scalars
    events = acc.Scalars(tag)
    assert [e.step for e in events] == [0, 2, 4]
    assert events[-1].value == pytest.approx(truth[1], rel=1e-5)
