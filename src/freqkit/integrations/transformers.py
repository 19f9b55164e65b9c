"""A Hugging Face ``TrainerCallback`` that runs a :class:`freqkit.SpectralMonitor` and logs wherever ``report_to`` sends.

    trainer = Trainer(model, args, train_dataset=ds, callbacks=[SpectralMonitorCallback(probe, every=50)])

A ``TrainerCallback`` cannot call ``Trainer.log`` (it never sees the trainer), and the reporting callbacks
run before user callbacks, so this callback drives its own instances of the integrations named by
``args.report_to`` (TensorBoard, Weights & Biases, MLflow, ...): each record goes to their ``on_log`` as
``{"spectral/<metric>/<block03>": value}`` at ``state.global_step`` (TensorBoard shows it under
``train/spectral/...``, in the same log folder). Only the main process measures.
"""

from __future__ import annotations

import os
from typing import Any, Optional, Sequence, Union

from freqkit.errors import FreqkitError
from freqkit.monitor import DEFAULT_METRICS, SpectralMonitor

try:
    from transformers import TrainerCallback
    from transformers.integrations import get_reporting_integration_callbacks
except ImportError:
    raise FreqkitError("freqkit.integrations.transformers needs transformers; pip install 'freqkit[transformers]'") from None

__all__ = ["SpectralMonitorCallback"]


def _tensorboard_dir(args: Any) -> str:
    """The folder the Trainer's own TensorBoard callback writes to, so both event files make one TensorBoard run."""
    explicit = os.getenv("TENSORBOARD_LOGGING_DIR") or getattr(args, "logging_dir", None)
    if explicit:
        return os.path.expanduser(explicit)
    runs = os.path.join(args.output_dir, "runs")
    # transformers 5 names the folder (date, host) when its callback starts, before this callback's first event
    made = [os.path.join(runs, d) for d in os.listdir(runs)] if os.path.isdir(runs) else []
    made = [d for d in made if os.path.isdir(d)]
    return max(made, key=os.path.getmtime) if made else os.path.join(runs, "spectral-monitor")


def _opened(reporter: Any, args: Any) -> Any:
    """A reporting callback ready for on_log (TensorBoard: pointed at the Trainer's log folder)."""
    if hasattr(reporter, "tb_writer") and getattr(reporter, "logging_dir", "") is None:
        reporter.logging_dir = _tensorboard_dir(args)
    return reporter


class SpectralMonitorCallback(TrainerCallback):
    """Measure the trained model (or its backbone) on ``probe`` (B, 3, H, W, preprocessed as the model expects)
    every ``every`` optimizer steps and once before training; ``monitor`` holds the history."""

    def __init__(
        self,
        probe: Any,
        every: int = 50,
        metrics: Sequence[str] = DEFAULT_METRICS,
        layers: Optional[Sequence[str]] = None,
        path: Union[str, os.PathLike, None] = None,
    ) -> None:
        self.probe, self.every, self.metrics, self.layers, self.path = probe, every, metrics, layers, path
        self.monitor: Optional[SpectralMonitor] = None
        self._reporters: Optional[list[Any]] = None

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        """Build the monitor on the model and record the starting point."""
        if self.monitor is None:
            if model is None:
                raise FreqkitError("SpectralMonitorCallback got no model from the Trainer; pass the model to Trainer(model=...)")
            self.monitor = SpectralMonitor(
                model, self.probe, every=self.every, metrics=self.metrics, layers=self.layers, path=self.path, figure_every=0
            )
        self._record(args, state, control, model)

    def on_step_end(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        """After each optimizer step (``state.global_step`` counts it)."""
        self._record(args, state, control, model)

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """Close the reporters this callback opened."""
        for reporter in self._reporters or []:
            reporter.on_train_end(args, state, control, **kwargs)
        self._reporters = None

    def _record(self, args: Any, state: Any, control: Any, model: Any) -> None:
        if self.monitor is None or not state.is_world_process_zero:
            return
        record = self.monitor.step(state.global_step)
        if record is None:
            return
        if self._reporters is None:
            self._reporters = [_opened(cls(), args) for cls in get_reporting_integration_callbacks(args.report_to)]
        scalars = self.monitor.scalars(record)
        for reporter in self._reporters:
            reporter.on_log(args, state, control, logs=dict(scalars), model=model)
