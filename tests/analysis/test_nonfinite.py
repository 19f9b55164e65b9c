"""NaN / inf in images or weights, and meta-device models, give analyze one line naming the model and layer."""

from __future__ import annotations

import pytest
import timm
import torch

from freqkit.analysis import analyze
from freqkit.errors import FreqkitError


def _vit() -> torch.nn.Module:
    torch.manual_seed(0)
    return timm.create_model("deit_tiny_patch16_224", img_size=32, patch_size=8, embed_dim=32, depth=3, num_heads=2).eval()


@pytest.fixture()
def images() -> torch.Tensor:
    return torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nonfinite_weights_name_the_first_bad_layer(images, bad):
    model = _vit()
    with torch.no_grad():
        model.blocks[1].mlp.fc2.weight[0, 0] = bad
    with pytest.raises(FreqkitError, match=r"model m: the output of layer blocks\.1 holds NaN or inf"):
        analyze({"m": model}, images)


def test_nonfinite_images(images):
    images = images.clone()
    images[0, 0, 0, 0] = float("nan")
    with pytest.raises(FreqkitError, match=r"images hold NaN or inf"):
        analyze(_vit(), images)


def test_meta_model_is_one_line(images):
    with torch.device("meta"):
        model = _vit()
    with pytest.raises(FreqkitError, match=r"is on the meta device"):
        analyze({"m": model}, images)
