"""All evaluation: fixed-size batches, and dense prediction at the original image size (``whole`` / ``slide``, flip, scales).

:func:`evaluate` scores batches at the training size (top-1, or mIoU / pixel accuracy / boundary F1, and
the loss); :func:`evaluate_dense` follows the paper protocol (FDAM, UPerNet on ADE20K; the mmsegmentation
test pipeline): each image is rescaled to fit ``scale`` = (2048, 512) keeping its aspect ratio; ``whole``
then resizes it to the next multiple of ``size_divisor`` (32) per side and runs the model once (non-square
token grids), ``slide`` runs ``crop`` x ``crop`` windows at ``stride`` (512 / 341) and averages the logits
where windows overlap. Optional horizontal flip and extra scale factors (e.g. 0.5 ... 1.75) average the
logits of every view; the logits are resized (bilinear) to the label's original size before the metrics.
Both normalize inputs with the model's own mean / std and finish the metrics the same way (DDP sums).
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

from freqkit.errors import FreqkitError, one_line
from freqkit.train.checkpoint import unwrap
from freqkit.train.config import TrainConfig, parse_scales
from freqkit.train.distributed import DistInfo, is_main
from freqkit.train.metrics import IGNORE_INDEX, build_metrics

__all__ = [
    "EVAL_MODES",
    "dense_logits",
    "evaluate",
    "evaluate_dense",
    "eval_options",
    "finish_metrics",
    "input_stats",
    "loss_fn",
    "normalize",
    "save_label_png",
]

EVAL_MODES = ("whole", "slide")


def _resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return x if tuple(x.shape[-2:]) == tuple(size) else F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def _run_padded(model: nn.Module, x: torch.Tensor, divisor: int) -> torch.Tensor:
    """model(x) on x zero-padded at the bottom / right to multiples of ``divisor``; logits cropped back to x's size."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % divisor, (-w) % divisor
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph))
    return model(x)[..., :h, :w].float()


def _slide(model: nn.Module, x: torch.Tensor, crop: int, stride: int, divisor: int) -> torch.Tensor:
    h, w = x.shape[-2:]
    rows = max(h - crop + stride - 1, 0) // stride + 1
    cols = max(w - crop + stride - 1, 0) // stride + 1
    total: Optional[torch.Tensor] = None
    count = torch.zeros(1, 1, h, w, device=x.device)
    for r in range(rows):
        for c in range(cols):
            y2, x2 = min(r * stride + crop, h), min(c * stride + crop, w)
            y1, x1 = max(y2 - crop, 0), max(x2 - crop, 0)
            out = _run_padded(model, x[..., y1:y2, x1:x2], divisor)
            if total is None:
                total = torch.zeros(x.shape[0], out.shape[1], h, w, device=x.device)
            total[..., y1:y2, x1:x2] += out
            count[..., y1:y2, x1:x2] += 1
    return total / count


def _rescaled_size(h: int, w: int, scale: tuple[int, int], factor: float) -> tuple[int, int]:
    from freqkit.data.transforms import rescale_size

    return rescale_size(h, w, (int(scale[0] * factor), int(scale[1] * factor)))


def input_stats(model: nn.Module) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) per RGB channel that ``model`` expects, from its timm ``pretrained_cfg`` (ImageNet's if none)."""
    from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

    m = unwrap(model)
    for candidate in (m, getattr(m, "encoder", None)):
        cfg = getattr(candidate, "pretrained_cfg", None)
        if isinstance(cfg, dict) and "mean" in cfg and "std" in cfg:
            return tuple(cfg["mean"]), tuple(cfg["std"])
    return tuple(IMAGENET_DEFAULT_MEAN), tuple(IMAGENET_DEFAULT_STD)


def normalize(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """Images (B, 3, H, W) in [0, 1] -> (x - mean) / std per channel."""
    m = torch.tensor(mean, dtype=x.dtype, device=x.device)[:, None, None]
    s = torch.tensor(std, dtype=x.dtype, device=x.device)[:, None, None]
    return (x - m) / s


class _ShardSampler(Sampler):
    """Every ``world``-th index from ``rank``, in order, no padding (evaluation shards)."""

    def __init__(self, n: int, rank: int, world: int) -> None:
        self.indices = list(range(rank, n, world))

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def _batches(loader):
    """Iterate ``loader``; a FreqkitError from a worker process comes out as its one line."""
    it = iter(loader)
    while True:
        try:
            batch = next(it)
        except StopIteration:
            return
        except FreqkitError as err:
            raise one_line(err) from None
        yield batch


def loss_fn(logits: torch.Tensor, target: torch.Tensor, mean: str = "valid") -> torch.Tensor:
    """Cross-entropy of logits (B, K) or (B, K, H, W) against targets, pixels labelled 255 ignored.

    ``mean='all'`` divides the labelled pixels' sum by every pixel, ignored ones included (mmsegmentation 0.x).
    """
    if logits.dim() == 4 and not (target != IGNORE_INDEX).any():
        return logits.float().sum() * 0.0  # an all-ignore batch: no signal, but keep the graph (DDP)
    if mean == "all" and logits.dim() == 4:
        return F.cross_entropy(logits.float(), target, ignore_index=IGNORE_INDEX, reduction="sum") / target.numel()
    return F.cross_entropy(logits.float(), target, ignore_index=IGNORE_INDEX)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    data: Dataset | DataLoader,
    task: str,
    num_classes: int,
    device: Optional[torch.device] = None,
    batch_size: int = 32,
    amp: bool = False,
    dist_info: Optional[DistInfo] = None,
    progress: bool = False,
) -> dict[str, float]:
    """Metrics of ``model`` on ``data`` (items (3, H, W) in [0, 1] + target): top1, or miou / pixel_acc / boundary_f1, and loss.

    Under DDP each process evaluates a shard and torchmetrics sums the statistics over processes.
    """
    from tqdm.auto import tqdm

    if int(batch_size) < 1:
        raise FreqkitError(f"batch_size must be >= 1, got {batch_size}")
    if int(num_classes) < 1:
        raise FreqkitError(f"num_classes must be >= 1, got {num_classes}")
    net = unwrap(model)
    device = device or next(net.parameters()).device
    if isinstance(data, DataLoader):
        loader = data
    else:
        if len(data) == 0:
            raise FreqkitError("the evaluation split is empty; add validation images")
        rank, world = (dist_info.rank, dist_info.world_size) if dist_info else (0, 1)
        # a private generator: evaluating must not draw from the global RNG (training streams stay reproducible)
        loader = DataLoader(
            data, batch_size=batch_size, sampler=_ShardSampler(len(data), rank, world), generator=torch.Generator()
        )
    mean, std = input_stats(net)
    metrics = build_metrics(task, num_classes).to(device)
    was_training = net.training
    net.eval()
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    count = torch.zeros((), dtype=torch.float64, device=device)
    try:
        for x, y in tqdm(
            _batches(loader), total=len(loader), desc="eval", leave=False, disable=not (progress and is_main(dist_info))
        ):
            x, y = x.to(device), torch.as_tensor(y).to(device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                logits = net(normalize(x, mean, std))
            logits = logits.float()
            if logits.shape[1] != num_classes:
                raise FreqkitError(
                    f"the model predicts {logits.shape[1]} classes but the data has {num_classes}; use a model trained on this data"
                )
            metrics.update(logits, y)
            loss_sum += loss_fn(logits, y).double() * x.shape[0]
            count += x.shape[0]
    finally:
        net.train(was_training)
    return finish_metrics(metrics, loss_sum, count, dist_info)


def finish_metrics(metrics: Any, loss_sum: torch.Tensor, count: torch.Tensor, dist_info: Optional[DistInfo]) -> dict[str, float]:
    """The metric values and the mean loss, summed over processes under DDP (torchmetrics syncs its own states)."""
    if dist_info is not None and dist_info.distributed:
        import torch.distributed as dist

        dist.all_reduce(loss_sum)
        dist.all_reduce(count)
    out = {k: float(v) for k, v in metrics.compute().items()}
    out["loss"] = float(loss_sum / count.clamp_min(1))
    return out


def eval_options(cfg: TrainConfig | dict[str, Any]) -> Optional[dict[str, Any]]:
    """Keyword arguments of :func:`evaluate_dense` from a config, or None for fixed-size batches."""
    c = cfg if isinstance(cfg, TrainConfig) else TrainConfig.from_dict(cfg)
    mode = c.eval_mode or ("whole" if c.crop_size else None)
    if mode is None:
        return None
    crop = int(c.crop_size or c.img_size or 512)
    return dict(
        mode=mode, scale=c.scale or (4 * crop, crop), crop=crop, flip=bool(c.eval_flip), scales=parse_scales(c.eval_scales)
    )


@torch.no_grad()
def dense_logits(
    model: nn.Module,
    image: torch.Tensor,
    mode: str = "whole",
    scale: tuple[int, int] = (2048, 512),
    crop: int = 512,
    stride: int = 341,
    size_divisor: int = 32,
    flip: bool = False,
    scales: Sequence[float] = (1.0,),
) -> torch.Tensor:
    """Logits (B, K, H, W) of a normalized image batch (B, 3, H, W) of one size, at that size, by ``mode``.

    Each scale factor f rescales the image to fit (scale[0] f, scale[1] f) keeping its aspect ratio;
    ``whole`` resizes that to multiples of ``size_divisor`` and runs once, ``slide`` averages ``crop``
    windows taken every ``stride`` pixels (windows and small images padded to ``size_divisor``).
    With ``flip`` the mirrored image is run too. The logits of every view are resized to (H, W) and averaged.
    """
    if mode not in EVAL_MODES:
        raise FreqkitError(f"unknown evaluation mode {mode!r}; use {' or '.join(EVAL_MODES)}")
    if stride < 1 or crop < 1 or size_divisor < 1:
        raise FreqkitError(f"crop, stride and size_divisor must be >= 1, got {crop}, {stride}, {size_divisor}")
    h, w = image.shape[-2:]
    acc: Optional[torch.Tensor] = None
    views = 0
    for f in scales:
        nh, nw = _rescaled_size(h, w, scale, f)
        if mode == "whole":
            nh, nw = math.ceil(nh / size_divisor) * size_divisor, math.ceil(nw / size_divisor) * size_divisor
        x = _resize(image, (nh, nw))
        for flipped in (False, True) if flip else (False,):
            xi = x.flip(-1) if flipped else x
            out = model(xi).float() if mode == "whole" else _slide(model, xi, crop, stride, size_divisor)
            if flipped:
                out = out.flip(-1)
            out = _resize(out, (h, w))
            acc = out if acc is None else acc + out
            views += 1
    return acc / views


def save_label_png(path: str | Path, labels: np.ndarray) -> Path:
    """Write an (H, W) integer label map as an 8-bit (or, above 255, 16-bit) PNG, atomically."""
    from PIL import Image

    from freqkit.io import atomic_write_bytes

    if labels.min(initial=0) < 0 or labels.max(initial=0) > 65535:
        raise FreqkitError(f"labels must be in 0..65535 to save as PNG, got {labels.min()}..{labels.max()}")
    im = Image.fromarray(labels.astype(np.uint8)) if labels.max(initial=0) <= 255 else Image.fromarray(labels.astype(np.uint16))
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return atomic_write_bytes(path, buf.getvalue())


def _raw_labels(pred: torch.Tensor, label_map: str) -> np.ndarray:
    """Class indices -> the dataset's raw convention (ADE20K: class + 1, 0 = other / ignore)."""
    a = pred.cpu().numpy().astype(np.int64)
    return a + 1 if label_map == "ade20k" else a


@torch.no_grad()
def evaluate_dense(
    model: nn.Module,
    data: Dataset,
    num_classes: int,
    device: Optional[torch.device] = None,
    mode: str = "whole",
    scale: tuple[int, int] = (2048, 512),
    crop: int = 512,
    stride: Optional[int] = None,
    size_divisor: int = 32,
    flip: bool = False,
    scales: Sequence[float] = (1.0,),
    amp: bool = False,
    dist_info: Optional[DistInfo] = None,
    progress: bool = False,
    save_predictions: Optional[str | Path] = None,
) -> dict[str, float]:
    """Segmentation metrics (miou, pixel_acc, boundary_f1, loss) of ``model`` on ``data`` (items (3, H, W) in [0, 1], (H, W)
    labels of any size) with :func:`dense_logits` at the original label size, one image at a time.

    ``stride`` defaults to 2/3 of ``crop`` (341 for 512). ``save_predictions``: a folder receiving one PNG per image
    (named after its mask file, else its index) in the dataset's raw label convention (ADE20K: class + 1).
    Under DDP each process takes every world-th image and the metric statistics are summed.
    """
    from tqdm.auto import tqdm

    if len(data) == 0:
        raise FreqkitError("the evaluation split is empty; add validation images")
    stride = int(stride) if stride is not None else max(1, round(crop * 2 / 3))
    net = unwrap(model)
    device = device or next(net.parameters()).device
    out_dir = None
    if save_predictions is not None:
        from freqkit.io import check_writable_dir

        out_dir = check_writable_dir(save_predictions, "save_predictions")
    label_map = getattr(data, "label_map", "identity")
    pairs = getattr(data, "pairs", None)
    mean, std = input_stats(net)
    metrics = build_metrics("segmentation", num_classes).to(device)
    rank, world = (dist_info.rank, dist_info.world_size) if dist_info else (0, 1)
    indices = range(rank, len(data), world)
    was_training = net.training
    net.eval()
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    count = torch.zeros((), dtype=torch.float64, device=device)
    try:
        for i in tqdm(indices, desc=f"eval ({mode})", leave=False, disable=not (progress and is_main(dist_info))):
            x, y = data[i]
            x, y = x[None].to(device), torch.as_tensor(y)[None].to(device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                logits = dense_logits(net, normalize(x, mean, std), mode, scale, crop, stride, size_divisor, flip, scales)
            if logits.shape[1] != num_classes:
                raise FreqkitError(
                    f"the model predicts {logits.shape[1]} classes but the data has {num_classes}; use a model trained on this data"
                )
            if logits.shape[-2:] != y.shape[-2:]:
                raise FreqkitError(f"item {i}: image {tuple(x.shape[-2:])} and mask {tuple(y.shape[-2:])} differ in size")
            metrics.update(logits, y)
            loss_sum += loss_fn(logits, y).double()
            count += 1
            if out_dir is not None:
                name = Path(pairs[i][1]).stem if pairs is not None else f"{i:06d}"
                save_label_png(out_dir / f"{name}.png", _raw_labels(logits[0].argmax(0), label_map))
    finally:
        net.train(was_training)
    return finish_metrics(metrics, loss_sum, count, dist_info)
