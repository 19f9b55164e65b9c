"""Registered DeiT-S models with AttnScale / FeatScale / GFSA: build, load timm and released weights, features."""

from __future__ import annotations

import pytest
import timm
import torch
from safetensors.torch import save_file

import freqkit.models  # noqa: F401  (registers the models)
from freqkit.layers import GFSA, AttnScale, FeatScale, FreqBlock
from freqkit.models import load_checkpoint
from freqkit.models.antismooth_vit import checkpoint_filter_fn, released_key

NAMES = {
    "deit_small_attnscale_patch16_224": ("attn_filter", AttnScale),
    "deit_small_featscale_patch16_224": ("feat_scale", FeatScale),
    "deit_small_gfsa_patch16_224": ("attn_filter", GFSA),
}
SMALL = dict(depth=2, img_size=48)  # the deit_small width and heads, shallow and small for CPU tests


def _part(block: FreqBlock, slot: str):
    return block.attn.filter if slot == "attn_filter" else block.feat_scale


@pytest.fixture(scope="module")
def deit_file(tmp_path_factory):
    base = timm.create_model("deit_small_patch16_224", **SMALL).eval()
    path = tmp_path_factory.mktemp("w") / "deit.safetensors"
    save_file(base.state_dict(), str(path))
    return base, path


def test_registered_with_timm():
    assert set(NAMES) <= set(timm.list_models("deit_small_*_patch16_224"))


@pytest.mark.parametrize("name", sorted(NAMES))
def test_timm_deit_weights_load_and_give_deit_output(name, deit_file):
    base, path = deit_file
    model = timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=str(path)), **SMALL).eval()
    slot, cls = NAMES[name]
    assert all(isinstance(b, FreqBlock) and isinstance(_part(b, slot), cls) for b in model.blocks)
    assert model.embed_dim == 384 and model.blocks[0].attn.num_heads == 6
    x = torch.randn(2, 3, 48, 48)
    with torch.no_grad():
        assert torch.equal(model(x), base(x))


@pytest.mark.parametrize("name", sorted(NAMES))
def test_released_checkpoint_keys_land_in_the_method_modules(name, deit_file):
    base, _ = deit_file
    slot, _cls = NAMES[name]
    sd = dict(base.state_dict())
    released = {}
    for i in range(SMALL["depth"]):
        if slot == "attn_filter":
            released[f"blocks.{i}.attn.lamb"] = torch.randn(6)
        else:
            released[f"blocks.{i}.lamb1"] = torch.randn(384)
            released[f"blocks.{i}.lamb2"] = torch.randn(384)
    model = timm.create_model(name, **SMALL).eval()
    load_checkpoint(model, {"model": {**sd, **released}}, filter_fn=checkpoint_filter_fn)
    for key, value in released.items():
        assert torch.equal(model.state_dict()[released_key(key)], value)
    x = torch.randn(1, 3, 48, 48)
    with torch.no_grad():
        assert (model(x) - base(x)).abs().max() > 1e-4  # the loaded filters are active


def test_released_key_mapping():
    assert released_key("blocks.3.attn.lamb") == "blocks.3.attn.filter.lamb"
    assert released_key("blocks.11.lamb1") == "blocks.11.feat_scale.lamb1"
    assert released_key("blocks.0.lamb2") == "blocks.0.feat_scale.lamb2"
    assert released_key("blocks.0.attn.qkv.weight") == "blocks.0.attn.qkv.weight"


@pytest.mark.parametrize("name", sorted(NAMES))
def test_features_only(name):
    model = timm.create_model(name, features_only=True, out_indices=(0, 1), **SMALL)
    feats = model(torch.randn(2, 3, 48, 48))
    assert [f.shape for f in feats] == [torch.Size([2, 384, 3, 3])] * 2
    assert model.feature_info.channels() == [384, 384]


def test_method_options_pass_through_create_model():
    m = timm.create_model("deit_small_gfsa_patch16_224", gfsa_K=4, gfsa_learn_w1=True, **SMALL)
    assert m.blocks[1].attn.filter.K == 4 and m.blocks[1].attn.filter.w1 is not None
    m = timm.create_model("deit_small_attnscale_patch16_224", attnscale_include_prefix=False, **SMALL)
    assert m.blocks[0].attn.filter.num_prefix_tokens == 1
    assert m(torch.randn(1, 3, 48, 48)).shape == (1, 1000)
