"""lr schedules (closed forms) and AdamW parameter groups (layer decay, FreqScale multiplier, no-decay)."""

from __future__ import annotations

import math

import pytest

from freqkit.errors import FreqkitError
from freqkit.models.spec import build_model
from freqkit.train.optim import lr_factor, param_groups


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


def _timm_scales(model, decay):
    """Per-parameter lr scale from timm's own param_groups_layer_decay: the reference freqkit follows."""
    from timm.optim import param_groups_layer_decay

    groups = param_groups_layer_decay(model, weight_decay=0.05, layer_decay=decay)
    return {id(p): g["lr_scale"] for g in groups for p in g["params"]}


@pytest.mark.parametrize("spec", ["vit_micro+fdam", "spanet_small", "resnet18"])
def test_classifier_layer_decay_equals_timms(spec):
    import timm

    import freqkit.models  # noqa: F401

    model = build_model(spec, "classification", 5, 32 if spec.startswith("vit") else 64)
    if spec == "spanet_small":
        model = timm.create_model("spanet_small", num_classes=5)
    want = _timm_scales(model, 0.7)
    groups = param_groups(model, lr=1.0, weight_decay=0.05, layer_decay=0.7)
    got = {id(p): g["base_lr"] for g in groups for p in g["params"]}
    assert got.keys() == want.keys()
    for name, p in model.named_parameters():
        assert got[id(p)] == pytest.approx(want[id(p)], rel=1e-12), name


def test_segmenter_layer_decay_freq_multiplier_and_no_decay():
    model = build_model("vit_micro+fdam", "segmentation", 3, 32)
    groups = param_groups(model, lr=1.0, weight_decay=0.05, layer_decay=0.5, freq_lr_mult=10.0)
    by_param = {id(p): g for g in groups for p in g["params"]}
    named = dict(model.named_parameters())
    depth = 4
    freq_seen = 0
    for name, p in named.items():
        g = by_param[id(p)]
        # mmsegmentation's ViT convention: embeddings decay^(L+1), block i decay^(L-i), norm and the decode head 1
        if ".blocks." in name:
            lid = int(name.split(".blocks.")[1].split(".")[0]) + 1
        elif any(k in name for k in ("cls_token", "pos_embed", "patch_embed")):
            lid = 0
        else:
            lid = depth + 1
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


def test_layer_decay_on_spanet_segmenter_follows_its_stages():
    model = build_model("spanet_small", "segmentation", 3, 64)
    groups = param_groups(model, 1.0, 0.0, layer_decay=0.5)
    lr = {id(p): g["base_lr"] for g in groups for p in g["params"]}
    named = dict(model.named_parameters())
    head = [lr[id(p)] for n, p in named.items() if n.startswith("head.")]
    first = [lr[id(p)] for n, p in named.items() if "stages.0." in n or "downsample_layers.0." in n]
    assert head and set(head) == {1.0} and first and max(first) < 0.5**3


def test_layer_decay_needs_a_group_matcher():
    model = build_model("resnet18", "segmentation", 3, 32)  # features_only drops ResNet's group_matcher
    with pytest.raises(FreqkitError, match="group_matcher"):
        param_groups(model, 1.0, 0.0, layer_decay=0.7)
    assert param_groups(model, 1.0, 0.0)  # without layer decay any model works
