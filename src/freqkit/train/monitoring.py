"""What ``freqkit.train`` watches besides the loss: the :class:`~freqkit.SpectralMonitor` on fixed validation
images (``monitor_every``, history in ``<out>/monitor.jsonl``) and TensorBoard events (``tensorboard``).

The probe is the first :data:`PROBE_IMAGES` (at most one batch) validation images, normalized as the model expects; it is read
with the global RNG states kept, so a run with the monitor trains exactly as one without. On resume the
history is cut back to the checkpoint's step (records after it were measured by the interrupted run and are
measured again), and TensorBoard events from that step on are purged.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn

from freqkit.errors import FreqkitError, ParameterError
from freqkit.monitor import SpectralMonitor, _rng_kept, truncate_history
from freqkit.probe import default_layers

__all__ = ["MONITOR_FILE", "PROBE_IMAGES", "probe_images", "start_monitor", "tensorboard_writer"]

PROBE_IMAGES = 16
MONITOR_FILE = "monitor.jsonl"


def probe_images(dataset: Any, count: int = PROBE_IMAGES, size: Optional[int] = None) -> torch.Tensor:
    """The first ``count`` images (B, 3, S, S) of ``dataset`` (items (image, target)), resized to ``size`` when they differ.

    ``size`` None: the first image's size. Whole-image validation splits hold images of every size, so a run
    passes its training size, which the model is known to take.
    """
    with _rng_kept(torch.device("cpu")):
        images = [dataset[i][0] for i in range(min(count, len(dataset)))]
    size = tuple(images[0].shape[-2:]) if size is None else (int(size), int(size))
    return torch.stack(
        [
            im if tuple(im.shape[-2:]) == size else F.interpolate(im[None].float(), size=size, mode="bilinear", antialias=True)[0]
            for im in images
        ]
    )


def start_monitor(
    cfg: Any,
    model: nn.Module,
    val_ds: Any,
    normalize: Callable[[torch.Tensor], torch.Tensor],
    out: Path,
    start: int,
    resumed: bool,
    writer: Any = None,
) -> Optional[SpectralMonitor]:
    """The run's monitor (every ``cfg.monitor_every`` steps) on the backbone of ``model`` (a segmenter's encoder), or None.

    The probe is at most ``cfg.batch_size`` images, so one measurement costs less than a training step at any
    image size. A resumed run keeps the history up to ``start``; a fresh run starts a new one and records step 0.
    """
    every = int(cfg.monitor_every)
    path = out / MONITOR_FILE
    if resumed:
        truncate_history(path, start)
    elif path.exists():
        path.unlink()
    if not every:
        return None
    net = getattr(model, "encoder", model)
    device = next(net.parameters()).device
    probe = probe_images(val_ds, min(PROBE_IMAGES, int(cfg.batch_size)), cfg.crop_size or cfg.img_size)
    try:
        monitor = SpectralMonitor(net, normalize(probe.to(device)), every=every, writer=writer, path=path)
        default_layers(monitor.net)
        if start == 0:
            monitor.step(0)
    except FreqkitError as err:  # a network whose layers the probe cannot find still trains, unwatched
        warnings.warn(f"the spectral monitor is off for this run: {err}", stacklevel=2)
        return None
    return monitor


def tensorboard_writer(folder: Optional[str], start: int) -> Any:
    """A TensorBoard ``SummaryWriter`` on ``folder`` (None: none); events at steps >= ``start`` of an interrupted run are purged."""
    if not folder:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ParameterError(
            "tensorboard", "needs the tensorboard package; pip install 'freqkit[tensorboard]' or leave it unset"
        ) from None
    return SummaryWriter(log_dir=str(folder), purge_step=start or None)
