"""Dense-prediction evaluation at the original image size: ``whole`` and ``slide`` inference, flip and multi-scale.

The paper protocol (FDAM, UPerNet on ADE20K; the mmsegmentation test pipeline): each image is
rescaled to fit ``scale`` = (2048, 512) keeping its aspect ratio; ``whole`` then resizes it to the
next multiple of ``size_divisor`` (32) per side and runs the model once (non-square token grids),
``slide`` runs ``crop`` x ``crop`` windows at ``stride`` (512 / 341) and averages the logits where
windows overlap. Optional horizontal flip and extra scale factors (e.g. 0.5 ... 1.75) average the
logits of every view. The logits are resized (bilinear) to the label's original size before the
metrics. Images of different sizes are evaluated one at a time.
"""
from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from freqkit.errors import FreqkitError

__all__ = ["EVAL_MODES", "dense_logits", "evaluate_dense", "parse_scales", "save_label_png"]

EVAL_MODES = ("whole", "slide")


def parse_scales(text: Optional[str | Sequence[float]]) -> tuple[float, ...]:
    """'0.5,0.75,1.0' (or a sequence) -> (0.5, 0.75, 1.0); None -> (1.0,). Every factor must be positive."""
    if text is None:
        return (1.0,)
    items = [s for s in text.split(",") if s.strip()] if isinstance(text, str) else list(text)
    try:
        scales = tuple(float(s) for s in items)
    except ValueError:
        raise FreqkitError(f"scale factors must be numbers separated by commas, e.g. 0.5,1.0,1.5; got {text!r}") from None
    if not scales or any(not (s > 0 and math.isfinite(s)) for s in scales):
        raise FreqkitError(f"scale factors must be positive numbers, e.g. 0.5,1.0,1.5; got {text!r}")
    return scales


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
        for flipped in ((False, True) if flip else (False,)):
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
    dist_info=None,
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

    from freqkit.train.checkpoint import unwrap
    from freqkit.train.distributed import is_main
    from freqkit.train.loop import _loss, finish_metrics, input_stats, normalize
    from freqkit.train.metrics import build_metrics

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
            loss_sum += _loss(logits, y).double()
            count += 1
            if out_dir is not None:
                name = Path(pairs[i][1]).stem if pairs is not None else f"{i:06d}"
                save_label_png(out_dir / f"{name}.png", _raw_labels(logits[0].argmax(0), label_map))
    finally:
        net.train(was_training)
    return finish_metrics(metrics, loss_sum, count, dist_info)
