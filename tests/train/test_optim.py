"""lr schedules (closed forms) and AdamW parameter groups (layer decay, FreqScale multiplier, no-decay)."""
from __future__ import annotations

import math

import pytest

from freqkit.errors import FreqkitError
from freqkit.train.models import build_model
from freqkit.train.optim import layer_id, lr_factor, param_groups


def test_warmup_then_cosine_and_poly():
    total, warm = 110, 10
    assert [lr_factor(s, total, warm) for s in range(3)] == pytest.approx([0.1, 0.2, 0.3])
    assert lr_factor(9, total, warm) == pytest.approx(1.0)
    assert lr_factor(10, total, warm) == pytest.approx(1.0)
    # cosine: half way through the decay the factor is (1 + min) / 2; it reaches min at the end
    assert lr_factor(60, total, warm, "cosine", 0.1) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lr_factor(110, total, warm, "cosine", 0.1) == pytest.approx(0.1)
    assert lr_factor(60, total, warm, "poly", 0.0, power=0.9) == pytest.approx(0.5**0.9)
    assert lr_factor(50, total, warm, "constant") == 1.0
    assert lr_factor(0, total, 0) == 1.0
    with pytest.raises(FreqkitError, match="unknown schedule"):
        lr_factor(0, 10, 0, "step")


def test_layer_id():
    assert layer_id("features.vit.cls_token", 4) == 0
    assert layer_id("features.vit.patch_embed.proj.weight", 4) == 0
    assert layer_id("features.vit.blocks.2.attn.qkv.weight", 4) == 3
    assert layer_id("head.classifier.weight", 4) == 5


def test_layer_decay_freq_multiplier_and_no_decay():
    model = build_model("vit_micro+fdam", "segmentation", 3, 32)
    groups = param_groups(model, lr=1.0, weight_decay=0.05, layer_decay=0.5, freq_lr_mult=10.0)
    by_param = {id(p): g for g in groups for p in g["params"]}
    named = dict(model.named_parameters())
    depth = 4
    freq_seen = 0
    for name, p in named.items():
        g = by_param[id(p)]
        lid = layer_id(name, depth)
        expected = 0.5 ** (depth + 1 - lid) * (10.0 if "freq_scale" in name else 1.0)
        assert g["base_lr"] == pytest.approx(expected), name
        freq_seen += "freq_scale" in name
        if p.ndim <= 1 or name.endswith(".bias") or name.endswith("pos_embed") or name.endswith("cls_token"):
            assert g["weight_decay"] == 0.0, name
        else:
            assert g["weight_decay"] == 0.05, name
    assert freq_seen > 0
    # every trainable parameter in exactly one group
    assert sum(len(g["params"]) for g in groups) == len(named)


def test_layer_decay_needs_blocks():
    model = build_model("resnet18", "segmentation", 3, 32)
    with pytest.raises(FreqkitError, match="layer_decay"):
        param_groups(model, 1.0, 0.0, layer_decay=0.7)
    assert param_groups(model, 1.0, 0.0)  # without layer decay any model works
