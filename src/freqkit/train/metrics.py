"""Evaluation metrics: top-1 (classification); mIoU, pixel accuracy and boundary F1 (segmentation).

Boundary F1 (after Csurka et al., BMVC 2013, class-agnostic form):

* a pixel is a boundary pixel of a label map if it is valid (not 255) and at least one of its 4
  neighbours is valid and carries a different label (both sides of an edge are boundary pixels);
* a boundary pixel of the prediction is *matched* if a ground-truth boundary pixel lies within
  Euclidean distance ``tolerance`` of it, and vice versa; prediction boundary pixels at ignored
  ground-truth positions are not counted;
* precision = matched prediction boundary pixels / prediction boundary pixels, recall = matched
  ground-truth boundary pixels / ground-truth boundary pixels, both summed over the whole dataset
  (micro average, so images without edges neither dominate nor break it); F1 = 2PR / (P + R).
  An empty side counts as perfect (P = 1 with no predicted edges, R = 1 with no true edges).

Default tolerance: 0.75 % of the image diagonal (Csurka et al.'s choice), at least 1 pixel: 1 px at
64 x 64, 5 px at 512 x 512.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torchmetrics import Metric

__all__ = [
    "check_num_classes",
    "boundary_map",
    "dilate",
    "boundary_counts",
    "boundary_f1",
    "default_tolerance",
    "BoundaryF1",
    "build_metrics",
]

IGNORE_INDEX = 255
# mIoU keeps a K x K int64 confusion matrix: 4096 classes are 134 MB, 60001 would be 29 GB
MAX_SEGMENTATION_CLASSES = 4096


def default_tolerance(height: int, width: int) -> int:
    """Boundary F1 tolerance in pixels: round(0.0075 * image diagonal), at least 1."""
    return max(1, round(0.0075 * math.hypot(height, width)))


def boundary_map(labels: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Label maps (B, H, W) -> bool (B, H, W): valid pixels with a valid 4-neighbour of another label."""
    valid = labels != ignore_index
    out = torch.zeros_like(valid)
    # vertical and horizontal neighbour pairs; mark both pixels of every differing valid pair
    for dim in (1, 2):
        a = labels.narrow(dim, 0, labels.shape[dim] - 1)
        b = labels.narrow(dim, 1, labels.shape[dim] - 1)
        va = valid.narrow(dim, 0, labels.shape[dim] - 1)
        vb = valid.narrow(dim, 1, labels.shape[dim] - 1)
        edge = (a != b) & va & vb
        out.narrow(dim, 0, labels.shape[dim] - 1).logical_or_(edge)
        out.narrow(dim, 1, labels.shape[dim] - 1).logical_or_(edge)
    return out


def dilate(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """Bool (B, H, W) dilated by a Euclidean disk of ``radius`` pixels."""
    if radius <= 0:
        return mask
    r = torch.arange(-radius, radius + 1, device=mask.device, dtype=torch.float32)
    disk = ((r[:, None] ** 2 + r[None, :] ** 2) <= radius**2 + 1e-6).float()[None, None]
    hit = F.conv2d(mask[:, None].float(), disk, padding=radius)
    return hit[:, 0] > 0.5


def boundary_counts(
    preds: torch.Tensor, target: torch.Tensor, tolerance: Optional[int] = None, ignore_index: int = IGNORE_INDEX
) -> torch.Tensor:
    """(B, H, W) predicted and true labels -> int64 (4,): matched pred, pred, matched true, true boundary pixels."""
    if preds.shape != target.shape or preds.dim() != 3:
        raise ValueError(
            f"boundary_counts expects preds and target of the same (B, H, W) shape, got {tuple(preds.shape)} and {tuple(target.shape)}"
        )
    tol = default_tolerance(*target.shape[-2:]) if tolerance is None else int(tolerance)
    valid = target != ignore_index
    pb = boundary_map(torch.where(valid, preds, torch.full_like(preds, ignore_index)), ignore_index)
    tb = boundary_map(target, ignore_index)
    matched_p = (pb & dilate(tb, tol)).sum()
    matched_t = (tb & dilate(pb, tol)).sum()
    return torch.stack([matched_p, pb.sum(), matched_t, tb.sum()]).long()


def _f1_from_counts(counts: torch.Tensor) -> torch.Tensor:
    mp, np_, mt, nt = (c.double() for c in counts)
    precision = mp / np_ if np_ > 0 else torch.tensor(1.0, dtype=torch.float64)
    recall = mt / nt if nt > 0 else torch.tensor(1.0, dtype=torch.float64)
    if precision + recall == 0:
        return torch.tensor(0.0)
    return (2 * precision * recall / (precision + recall)).float()


def boundary_f1(
    preds: torch.Tensor, target: torch.Tensor, tolerance: Optional[int] = None, ignore_index: int = IGNORE_INDEX
) -> torch.Tensor:
    """Boundary F1 of predicted vs true label maps (B, H, W), micro-averaged over the batch; a scalar in [0, 1]."""
    return _f1_from_counts(boundary_counts(preds, target, tolerance, ignore_index))


class BoundaryF1(Metric):
    """torchmetrics ``Metric`` for :func:`boundary_f1`, accumulated over batches and synced across processes."""

    full_state_update = False
    higher_is_better = True

    def __init__(self, tolerance: Optional[int] = None, ignore_index: int = IGNORE_INDEX, **kwargs) -> None:
        super().__init__(**kwargs)
        self.tolerance, self.ignore_index = tolerance, ignore_index
        self.add_state("counts", default=torch.zeros(4, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        """Add a batch: preds (B, H, W) labels or (B, K, H, W) logits, target (B, H, W)."""
        if preds.dim() == 4:
            preds = preds.argmax(1)
        self.counts += boundary_counts(preds, target, self.tolerance, self.ignore_index).to(self.counts.device)

    def compute(self) -> torch.Tensor:
        """The F1 of the accumulated counts."""
        return _f1_from_counts(self.counts)


def check_num_classes(task: str, num_classes: int) -> None:
    """Refuse a class count the metrics of ``task`` cannot hold (one FreqkitError naming ``num_classes``)."""
    from freqkit.errors import FreqkitError

    if int(num_classes) < 1:
        raise FreqkitError(f"num_classes must be >= 1, got {num_classes}")
    if task == "classification" and int(num_classes) < 2:
        # torchmetrics' multiclass accuracy needs two classes: refuse now, not at the final evaluation
        raise FreqkitError(
            f"num_classes={num_classes}: classification needs at least 2 classes (an image folder needs 2 or more class "
            "sub-folders); add a class, or train a segmentation task instead"
        )
    if task == "segmentation" and int(num_classes) > MAX_SEGMENTATION_CLASSES:
        raise FreqkitError(
            f"num_classes={num_classes} is more than {MAX_SEGMENTATION_CLASSES} segmentation classes (the mIoU confusion matrix "
            f"alone would take {int(num_classes) ** 2 * 8 / 1e9:.1f} GB); check the masks' label values"
        )


def build_metrics(task: str, num_classes: int):
    """A ``MetricCollection`` for ``task``: {'top1'} or {'miou', 'pixel_acc', 'boundary_f1'} (values in [0, 1])."""
    from torchmetrics import MetricCollection
    from torchmetrics.classification import MulticlassAccuracy, MulticlassJaccardIndex

    check_num_classes(task, num_classes)
    if task == "classification":
        return MetricCollection({"top1": MulticlassAccuracy(num_classes, top_k=1, average="micro")})
    return MetricCollection(
        {
            "miou": MulticlassJaccardIndex(num_classes, ignore_index=IGNORE_INDEX, average="macro"),
            "pixel_acc": MulticlassAccuracy(num_classes, ignore_index=IGNORE_INDEX, average="micro"),
            "boundary_f1": BoundaryF1(),
        }
    )
