"""Segmentation heads' initialization against the formulas it names.

``torch``: PyTorch's Conv2d default, kaiming_uniform(a=sqrt(5)), i.e. weights uniform in +-1/sqrt(fan_in).
``mmseg``: mmcv's ConvModule (He-normal on fan-out, zero bias) and mmsegmentation's classifier (normal, std 0.01,
zero bias).
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from freqkit.errors import FreqkitError
from freqkit.models.segmentation import FCNHead, SegmentationModel, UPerHead
from freqkit.train.config import resolve_config


def _convs(head: nn.Module) -> list[nn.Conv2d]:
    return [m for m in head.modules() if isinstance(m, nn.Conv2d) and m is not head.classifier]


def _fan(conv: nn.Conv2d) -> tuple[int, int]:
    k = conv.kernel_size[0] * conv.kernel_size[1]
    return conv.in_channels // conv.groups * k, conv.out_channels // conv.groups * k


@pytest.mark.parametrize("make", [lambda i: UPerHead([16, 32, 48, 64], 5, 32, init=i), lambda i: FCNHead(32, 5, 48, init=i)])
def test_torch_init_is_pytorch_default_uniform(make):
    torch.manual_seed(0)
    head = make("torch")
    for conv in [*_convs(head), head.classifier]:
        bound = 1 / math.sqrt(_fan(conv)[0])
        w = conv.weight.detach()
        assert w.abs().max() <= bound
        # uniform on [-b, b]: std b / sqrt(3); thousands of draws put the estimate within 10 %
        assert abs(w.std().item() - bound / math.sqrt(3)) < 0.1 * bound / math.sqrt(3)


@pytest.mark.parametrize("make", [lambda i: UPerHead([16, 32, 48, 64], 5, 32, init=i), lambda i: FCNHead(32, 5, 48, init=i)])
def test_mmseg_init_is_he_normal_fan_out_and_classifier_std_001(make):
    torch.manual_seed(0)
    head = make("mmseg")
    for conv in _convs(head):
        std = math.sqrt(2 / _fan(conv)[1])
        assert abs(conv.weight.std().item() - std) < 0.1 * std
        assert conv.bias is None or not conv.bias.any()
    w = head.classifier.weight.detach()
    assert abs(w.std().item() - 0.01) < 0.15 * 0.01  # 160 or 240 draws
    assert not head.classifier.bias.any()


def test_segmentation_model_refuses_an_unknown_init_in_one_line():
    with pytest.raises(FreqkitError, match="unknown head_init 'xavier'; use one of torch, mmseg"):
        SegmentationModel(nn.Identity(), [8, 8, 8, 8], 3, head_channels=8, head_init="xavier")


def test_paper_recipes_use_mmseg_init_and_the_small_default_does_not():
    assert resolve_config("upernet_deit_small_ade20k_160k").head_init == "mmseg"
    assert resolve_config(None).head_init == "torch"
