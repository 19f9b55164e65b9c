"""Lightning: a tiny CPU fit with SpectralMonitorCallback writes hf_ratio scalars that TensorBoard reads back."""

from __future__ import annotations

import pytest
import torch

L = pytest.importorskip("lightning.pytorch")
pytest.importorskip("tensorboard")

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

from freqkit.analysis import analyze  # noqa: E402
from freqkit.integrations.lightning import SpectralMonitorCallback  # noqa: E402
from freqkit.models.spec import build_model  # noqa: E402


class _Classifier(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = build_model("vit_micro", "classification", 3, 32)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return torch.nn.functional.cross_entropy(self.net(x), y)

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=1e-2)


def test_lightning_fit_logs_hf_ratio_to_tensorboard(tmp_path):
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(8, 3, 32, 32, generator=g), torch.randint(0, 3, (8,), generator=g)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=2)
    cb = SpectralMonitorCallback(x[:2], every=2, path=tmp_path / "monitor.jsonl")
    logger = L.loggers.TensorBoardLogger(str(tmp_path), name="tb", version=0)
    model = _Classifier()
    trainer = L.Trainer(
        max_steps=4,
        accelerator="cpu",
        devices=1,
        logger=logger,
        callbacks=[cb],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=1,
    )
    trainer.fit(model, loader)
    assert cb.monitor.history.steps == [0, 2, 4]
    # the last record is analyze of the trained backbone (the monitor found it inside the LightningModule)
    truth = analyze(model.net, x[:2], cka=False, methods=False).models[0].series("hf_ratio")
    assert cb.monitor.history[-1]["hf_ratio"] == pytest.approx(truth, rel=1e-5)
    acc = EventAccumulator(logger.log_dir)
    acc.Reload()
    tag = "spectral/hf_ratio/block03"
    assert tag in acc.Tags()["scalars"]
    events = acc.Scalars(tag)
    assert [e.step for e in events] == [0, 2, 4]
    assert events[-1].value == pytest.approx(truth[3], rel=1e-5)
