"""A Lightning ``Callback`` that runs a :class:`freqkit.SpectralMonitor` and logs through the trainer's loggers.

    trainer = L.Trainer(callbacks=[SpectralMonitorCallback(probe, every=50)], logger=TensorBoardLogger("tb"))

Each record becomes one scalar per layer and metric (``spectral/hf_ratio/block03``) in every logger of the
trainer (``logger.log_metrics``); a logger whose ``experiment`` has ``add_figure`` (TensorBoard) also gets the
per-layer figure every ``figure_every`` records. Only the global-zero process measures.
"""

from __future__ import annotations

import os
from typing import Any, Optional, Sequence, Union

from freqkit.errors import FreqkitError
from freqkit.monitor import DEFAULT_METRICS, TAG_PREFIX, SpectralMonitor, _plot_by_layer

try:
    from lightning.pytorch.callbacks import Callback
except ImportError:  # the standalone package name
    try:
        from pytorch_lightning.callbacks import Callback
    except ImportError:
        raise FreqkitError("freqkit.integrations.lightning needs Lightning; pip install 'freqkit[lightning]'") from None

__all__ = ["SpectralMonitorCallback"]


class SpectralMonitorCallback(Callback):
    """Measure the LightningModule (or its backbone, found as :class:`~freqkit.SpectralMonitor` does) on ``probe``
    (B, 3, H, W) every ``every`` optimizer steps, and once before training; ``monitor`` holds the history."""

    def __init__(
        self,
        probe: Any,
        every: int = 50,
        metrics: Sequence[str] = DEFAULT_METRICS,
        layers: Optional[Sequence[str]] = None,
        path: Union[str, os.PathLike, None] = None,
        figure_every: int = 5,
    ) -> None:
        super().__init__()
        self.probe, self.every, self.metrics, self.layers, self.path = probe, every, metrics, layers, path
        self.figure_every = int(figure_every)
        self.monitor: Optional[SpectralMonitor] = None

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        """Build the monitor on the module and record the starting point."""
        if self.monitor is None:
            self.monitor = SpectralMonitor(
                pl_module, self.probe, every=self.every, metrics=self.metrics, layers=self.layers, path=self.path, figure_every=0
            )
        self._record(trainer, trainer.global_step)

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        """After the optimizer step (``global_step`` already counts it); with gradient accumulation, once per step."""
        self._record(trainer, trainer.global_step)

    def _record(self, trainer: Any, step: int) -> None:
        if self.monitor is None or not trainer.is_global_zero:
            return
        record = self.monitor.step(step)
        if record is None:
            return
        scalars = self.monitor.scalars(record)
        figure = self.figure_every and (len(self.monitor.history) - 1) % self.figure_every == 0
        for logger in trainer.loggers:
            logger.log_metrics(scalars, step=step)
            writer = getattr(logger, "experiment", None)
            if figure and callable(getattr(writer, "add_figure", None)):
                writer.add_figure(f"{TAG_PREFIX}/by_layer", _plot_by_layer(self.monitor.history, None), step)
