"""What trained models predict on fixed validation images, as JSON-ready data and figures.

Segmentation: for a few images the image, the ground truth and each model's label map (argmax of its
logits), in one palette, with the boundary errors marked. The errors are the boundary pixels that
boundary F1 (``freqkit.train.metrics``) counts as unmatched, with the same tolerance: "missed" are
ground-truth boundary pixels with no predicted boundary within the tolerance, "spurious" are predicted
boundary pixels (at valid ground-truth positions) with no true boundary within it. Classification: a
confusion matrix per model over all the given images.
"""

from __future__ import annotations

import colorsys
from typing import Any, Mapping, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from freqkit.errors import FreqkitError

__all__ = ["prediction_panel_data", "plot_predictions", "palette", "IGNORE_INDEX"]

IGNORE_INDEX = 255
Stats = Union[Sequence[float], Mapping[str, Sequence[float]]]


def palette(num_classes: int) -> list[list[int]]:
    """(num_classes, 3) uint8 RGB colours: matplotlib's tab20 for up to 20 classes, golden-ratio hues beyond."""
    from matplotlib import colormaps

    if num_classes <= 20:
        cmap = colormaps["tab20"]
        # tab20 pairs a strong and a light shade of each hue: strong shades first keeps small label sets distinct
        order = list(range(0, 20, 2)) + list(range(1, 20, 2))
        return [[round(255 * c) for c in cmap(order[i])[:3]] for i in range(num_classes)]
    out = []
    for i in range(num_classes):
        h = (i * 0.618033988749895) % 1.0
        s, v = (0.65, 0.95) if i % 2 == 0 else (0.9, 0.7)
        out.append([round(255 * c) for c in colorsys.hsv_to_rgb(h, s, v)])
    return out


def _stats_for(stats: Stats, name: str, what: str) -> torch.Tensor:
    value = stats[name] if isinstance(stats, Mapping) else stats
    t = torch.as_tensor(value, dtype=torch.float32).reshape(-1)
    if t.numel() != 3:
        raise FreqkitError(
            f"prediction_panel_data: {what} must hold 3 values (one per RGB channel), got {t.numel()} for {name!r}"
        )
    return t[:, None, None]


def _boundary_errors(
    pred: torch.Tensor, target: torch.Tensor, tolerance: Optional[int], ignore_index: int
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(missed, spurious) bool (B, H, W) boundary pixels and the tolerance used (boundary F1's definitions)."""
    from freqkit.train.metrics import boundary_map, default_tolerance, dilate

    tol = default_tolerance(*target.shape[-2:]) if tolerance is None else int(tolerance)
    valid = target != ignore_index
    pb = boundary_map(torch.where(valid, pred, torch.full_like(pred, ignore_index)), ignore_index)
    tb = boundary_map(target, ignore_index)
    return tb & ~dilate(pb, tol), pb & ~dilate(tb, tol), tol


def _logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    p = next(iter(model.parameters()), None)
    device = p.device if p is not None else torch.device("cpu")
    dtype = p.dtype if p is not None and p.is_floating_point() else torch.float32
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(x.to(device=device, dtype=dtype))
    finally:
        model.train(was)
    if not isinstance(out, torch.Tensor):
        raise FreqkitError(
            f"prediction_panel_data: {type(model).__name__} returned {type(out).__name__}, expected a logits tensor"
        )
    return out.float().cpu()


def prediction_panel_data(
    models: Mapping[str, nn.Module],
    images01: torch.Tensor,
    targets: torch.Tensor,
    task: str,
    mean: Stats,
    std: Stats,
    *,
    num_images: int = 4,
    num_classes: Optional[int] = None,
    class_names: Optional[Sequence[str]] = None,
    tolerance: Optional[int] = None,
    ignore_index: int = IGNORE_INDEX,
) -> dict[str, Any]:
    """Predictions of ``models`` (name -> model) on images01 (B, 3, H, W) in [0, 1] with targets, as plain lists.

    Each model sees (images01 - mean) / std; ``mean`` / ``std`` are 3 values or a dict name -> 3 values.
    task "segmentation": targets (B, H, W) class indices (``ignore_index`` = unlabeled); for the first
    ``num_images`` images "labels"[model] is argmax over classes of the logits (B, K, H, W) (resized
    bilinearly to the target size if needed) and "missed" / "spurious" the boundary errors (see the
    module docstring); "image" is uint8 (n, H, W, 3), "target" (n, H, W). task "classification": targets
    (B,); "confusion"[model] is the (K, K) count matrix over all B images, rows true class, columns predicted.
    """
    if task not in ("segmentation", "classification"):
        raise FreqkitError(f"prediction_panel_data: task must be 'segmentation' or 'classification', got {task!r}")
    if not isinstance(models, Mapping) or not models:
        raise FreqkitError("prediction_panel_data: models must be a non-empty dict name -> nn.Module")
    if not isinstance(images01, torch.Tensor) or images01.ndim != 4 or images01.shape[1] != 3:
        raise FreqkitError(
            f"prediction_panel_data: images01 must be (B, 3, H, W) in [0, 1], got {getattr(images01, 'shape', type(images01))}"
        )
    targets = torch.as_tensor(targets).long().cpu()
    b = images01.shape[0]
    if targets.shape[0] != b:
        raise FreqkitError(f"prediction_panel_data: {targets.shape[0]} targets for {b} images; pass one target per image")
    n = min(int(num_images), b) if task == "segmentation" else b
    x01 = images01[:n].detach().float().cpu()
    out: dict[str, Any] = {"task": task, "models": list(models), "ignore_index": ignore_index}
    logits = {}
    for name, model in models.items():
        x = (x01 - _stats_for(mean, name, "mean")) / _stats_for(std, name, "std")
        logits[name] = _logits(model, x)
    k = int(num_classes) if num_classes is not None else int(next(iter(logits.values())).shape[1])
    out["num_classes"] = k
    out["class_names"] = list(class_names) if class_names is not None else None
    out["palette"] = palette(k)
    if task == "classification":
        if targets.ndim != 1:
            raise FreqkitError(
                f"prediction_panel_data: classification targets must be (B,) class indices, got {tuple(targets.shape)}"
            )
        out["confusion"], out["accuracy"] = {}, {}
        for name, lg in logits.items():
            if lg.ndim != 2:
                raise FreqkitError(
                    f"prediction_panel_data: {name} gave logits {tuple(lg.shape)}, expected (B, K) for classification"
                )
            pred = lg.argmax(dim=1)
            keep = (targets >= 0) & (targets < k)
            cm = torch.bincount(targets[keep] * k + pred[keep], minlength=k * k).reshape(k, k)
            out["confusion"][name] = cm.tolist()
            out["accuracy"][name] = float((pred[keep] == targets[keep]).float().mean()) if keep.any() else float("nan")
        return out
    t = targets[:n]
    if t.ndim != 3:
        raise FreqkitError(
            f"prediction_panel_data: segmentation targets must be (B, H, W) label maps, got {tuple(targets.shape)}"
        )
    out["image"] = (x01.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).tolist()
    out["target"] = t.tolist()
    out["labels"], out["missed"], out["spurious"], out["pixel_accuracy"] = {}, {}, {}, {}
    for name, lg in logits.items():
        if lg.ndim != 4:
            raise FreqkitError(
                f"prediction_panel_data: {name} gave logits {tuple(lg.shape)}, expected (B, K, H, W) for segmentation"
            )
        if lg.shape[-2:] != t.shape[-2:]:
            lg = F.interpolate(lg, size=t.shape[-2:], mode="bilinear", align_corners=False)
        pred = lg.argmax(dim=1)
        missed, spurious, tol = _boundary_errors(pred, t, tolerance, ignore_index)
        valid = t != ignore_index
        out["labels"][name] = pred.tolist()
        out["missed"][name] = missed.to(torch.uint8).tolist()
        out["spurious"][name] = spurious.to(torch.uint8).tolist()
        out["pixel_accuracy"][name] = float((pred[valid] == t[valid]).float().mean()) if valid.any() else float("nan")
        out["tolerance"] = tol
    return out


# ------------------------------------------------------------------------------------------ figures
def _colour(labels: np.ndarray, pal: np.ndarray, ignore_index: int) -> np.ndarray:
    # unlabeled (ignore_index) and out-of-range labels are grey: black and white mark boundary errors
    rgb = np.full((*labels.shape, 3), 128, dtype=np.uint8)
    ok = (labels >= 0) & (labels < len(pal))
    rgb[ok] = pal[labels[ok]]
    return rgb


def plot_predictions(data: dict[str, Any]):
    """Figures of :func:`prediction_panel_data` output as file name -> matplotlib Figure ("predictions.png" or "predictions_confusion.png")."""
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    models = data["models"]
    if data["task"] == "classification":
        k = data["num_classes"]
        fig = Figure(figsize=(3.6 * len(models) + 0.6, 3.6), dpi=110, layout="constrained")
        axes = np.atleast_1d(fig.subplots(1, len(models), squeeze=False)[0])
        names = data.get("class_names") or [str(i) for i in range(k)]
        im = None
        for ax, m in zip(axes, models):
            cm = np.asarray(data["confusion"][m], dtype=np.float64)
            rows = cm.sum(axis=1, keepdims=True)
            frac = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
            im = ax.imshow(frac, cmap="Blues", vmin=0, vmax=1)
            if k <= 12:
                for i in range(k):
                    for j in range(k):
                        ax.text(
                            j,
                            i,
                            int(cm[i, j]),
                            ha="center",
                            va="center",
                            fontsize=7,
                            color="white" if frac[i, j] > 0.5 else "black",
                        )
                ax.set_xticks(range(k), names, fontsize=7, rotation=90)
                ax.set_yticks(range(k), names, fontsize=7)
            ax.set_xlabel("predicted", fontsize=8)
            ax.set_ylabel("true", fontsize=8)
            ax.set_title(f"{m} (accuracy {data['accuracy'][m]:.3f})", fontsize=9)
        cb = fig.colorbar(im, ax=list(axes), shrink=0.8)
        cb.set_label("share of the true class", fontsize=8)
        fig.suptitle("confusion matrices on the validation images\n(counts; colour = share of each true class)", fontsize=10)
        return {"predictions_confusion.png": fig}

    pal = np.asarray(data["palette"], dtype=np.uint8)
    ign = int(data.get("ignore_index", IGNORE_INDEX))
    images = np.asarray(data["image"], dtype=np.uint8)
    target = np.asarray(data["target"])
    n = len(images)
    ncols = 2 + len(models)
    fig = Figure(figsize=(2.2 * ncols, 2.25 * n + 0.9), dpi=110, layout="constrained")
    axes = np.atleast_2d(fig.subplots(n, ncols, squeeze=False))
    for r in range(n):
        panels = [(images[r], "image"), (_colour(target[r], pal, ign), "ground truth")]
        for m in models:
            rgb = _colour(np.asarray(data["labels"][m][r]), pal, ign)
            rgb[np.asarray(data["missed"][m][r], dtype=bool)] = (255, 255, 255)
            rgb[np.asarray(data["spurious"][m][r], dtype=bool)] = (0, 0, 0)
            acc = data["pixel_accuracy"][m]
            panels.append((rgb, f"{m}\n(pixel accuracy {acc:.3f})"))
        for c, (img, title) in enumerate(panels):
            ax = axes[r, c]
            ax.imshow(img, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(title, fontsize=8)
    fig.legend(
        handles=[
            Patch(facecolor="white", edgecolor="k", label="missed boundary"),
            Patch(facecolor="black", edgecolor="k", label="spurious boundary"),
        ],
        loc="outside lower center",
        ncol=2,
        fontsize=8,
    )
    fig.suptitle(
        f"predictions on {n} fixed validation images; grey = unlabeled\n"
        f"boundary errors: boundary pixels unmatched within {data.get('tolerance')} px (as boundary F1)",
        fontsize=10,
    )
    return {"predictions.png": fig}
