"""Dense evaluation at the original size: whole vs slide, flip and multi-scale, saved predictions."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from freqkit.errors import FreqkitError
from freqkit.train.config import parse_scales
from freqkit.train.evaluate import dense_logits, evaluate_dense

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data"))
from test_transforms import SIZES, make_ade  # noqa: E402


def _seg(num_classes=4, **kw):
    from freqkit.models.spec import build_model

    torch.manual_seed(0)
    return build_model("vit_micro", "segmentation", num_classes, 32, **kw).eval()


def test_whole_equals_slide_when_one_window_covers_the_image():
    net = _seg()
    x = torch.randn(1, 3, 48, 72, generator=torch.Generator().manual_seed(0))
    # (96, 64) rescales 48 x 72 to 64 x 96: multiples of 32, one 128-px window
    whole = dense_logits(net, x, "whole", scale=(96, 64), crop=128)
    slide = dense_logits(net, x, "slide", scale=(96, 64), crop=128, stride=85)
    assert whole.shape == (1, 4, 48, 72)
    torch.testing.assert_close(whole, slide, rtol=1e-4, atol=1e-4 * float(whole.abs().max()))


def test_slide_averages_overlapping_windows():
    # a per-pixel model gives every window the full image's logits there, so any overlap average equals one pass
    torch.manual_seed(0)
    net = nn.Conv2d(3, 5, 1)
    x = torch.randn(1, 3, 50, 70)
    ref = dense_logits(net, x, "whole", scale=(70, 50), size_divisor=1)
    out = dense_logits(net, x, "slide", scale=(70, 50), crop=32, stride=13, size_divisor=1)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5 * float(ref.abs().max()))


class _Ramp(nn.Module):
    """Logits that depend on the column: not mirror-symmetric."""

    def forward(self, x):
        ramp = torch.linspace(0, 1, x.shape[-1])
        return torch.stack([x[:, 0] * ramp, x[:, 1] - ramp], 1)


def test_flip_and_scales_shapes_and_flip_average():
    net = _Ramp()
    x = torch.randn(1, 3, 40, 56, generator=torch.Generator().manual_seed(1))
    out = dense_logits(net, x, "whole", scale=(56, 40), size_divisor=8, flip=True)
    expect = (net(x) + net(x.flip(-1)).flip(-1)) / 2
    torch.testing.assert_close(out, expect, rtol=1e-5, atol=1e-6)
    seg = _seg()
    for mode in ("whole", "slide"):
        y = dense_logits(seg, x, mode, scale=(56, 40), crop=32, stride=21, flip=True, scales=parse_scales("0.5,1.0,1.75"))
        assert y.shape == (1, 4, 40, 56) and torch.isfinite(y).all()
    with pytest.raises(FreqkitError, match="positive"):
        parse_scales("0.5,-1")


def test_evaluate_dense_at_original_size_and_saved_predictions(tmp_path):
    from freqkit.data import ade20k_dataset

    root = make_ade(tmp_path / "ade")
    ds = ade20k_dataset(root, "val", crop_size=32)
    net = _seg(150)
    res = evaluate_dense(net, ds, 150, mode="whole", scale=(128, 32), crop=32, save_predictions=tmp_path / "pred")
    assert {"miou", "pixel_acc", "boundary_f1", "loss"} <= set(res)
    right = total = 0
    for i, (w, h) in enumerate(SIZES):
        pred = np.array(Image.open(tmp_path / "pred" / f"ADE_{i:03d}.png"), dtype=np.int64)
        gt = np.array(Image.open(root / "annotations" / "validation" / f"ADE_{i:03d}.png"), dtype=np.int64)
        assert pred.shape == (h, w) and pred.min() >= 1 and pred.max() <= 150
        right += int(((pred == gt) & (gt != 0)).sum())
        total += int((gt != 0).sum())
    assert res["pixel_acc"] == pytest.approx(right / total, abs=1e-6)
