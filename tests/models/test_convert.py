"""freqkit.convert with the FDAM methods (fdam, attinv, freqscale) on the timm ViT families: every
weight kept, the output preserved at init, options, prefix tokens, dynamic image sizes, copies."""

from __future__ import annotations

import copy
import io

import pytest
import timm
import torch
from timm.models.vision_transformer import VisionTransformer

from freqkit.errors import FreqkitError
from freqkit.layers import AttInv, FreqBlock, FreqScale
from freqkit.models import convert

# small configurations of each family: (name, kwargs, input size)
FAMILIES = [
    ("vit_tiny_patch16_224", dict(img_size=32, patch_size=8, depth=2), (32, 32)),
    ("deit_tiny_distilled_patch16_224", dict(img_size=32, patch_size=8, depth=2), (32, 32)),  # CLS + distillation
    ("deit3_small_patch16_224", dict(img_size=32, patch_size=8, depth=2, embed_dim=48, num_heads=3), (32, 32)),
    ("vit_small_patch16_224", dict(img_size=32, patch_size=8, depth=2, embed_dim=48, num_heads=3, reg_tokens=4), (32, 32)),
    ("vit_tiny_patch16_224", dict(img_size=32, patch_size=8, depth=2, dynamic_img_size=True), (24, 40)),  # non-square
]


def _model(name: str, kwargs: dict) -> torch.nn.Module:
    m = timm.create_model(name, num_classes=7, **kwargs).eval()
    if "deit3" in name:  # LayerScale starts at 1e-6: make the blocks matter
        for blk in m.blocks:
            blk.ls1.gamma.data.fill_(0.5)
            blk.ls2.gamma.data.fill_(0.5)
    return m


@pytest.mark.parametrize("method", ["fdam", "attinv", "freqscale"])
@pytest.mark.parametrize("name,kwargs,hw", FAMILIES, ids=lambda v: v if isinstance(v, str) else None)
def test_keeps_weights_and_output_at_zero_init(method, name, kwargs, hw):
    model = _model(name, kwargs)
    x = torch.randn(2, 3, *hw)
    with torch.no_grad():
        ref = model(x)
    before = {k: v for k, v in model.state_dict().items()}
    convert(model, method)  # defaults: exact identity at init
    after = model.state_dict()
    for k, v in before.items():  # every weight kept, shared (same storage), not copied
        assert k in after and after[k].data_ptr() == v.data_ptr(), k
    assert all(isinstance(b, FreqBlock) for b in model.blocks)
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref, atol=1e-6, rtol=1e-6)


def test_released_init_changes_the_output_by_about_1e_4():
    """The released inits (gammas 1e-5, banks std 1e-5), chosen explicitly, are not exactly the
    identity: measured on random-init DeiT-S the logits move by ~1e-4 relative; a small model stays
    well below 1e-3. This is why convert defaults to zero inits."""
    model = _model("deit_tiny_distilled_patch16_224", dict(img_size=32, patch_size=8, depth=4))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ref = model(x)
        y = convert(model, "fdam", attinv_init_value=1e-5, freqscale_init_std=1e-5)(x)
    rel = ((y - ref).norm() / ref.norm()).item()
    assert 0 < rel < 1e-3


def test_prefix_tokens_bypass_freqscale_and_grid_follows_input():
    model = _model("deit_tiny_distilled_patch16_224", dict(img_size=32, patch_size=8, depth=1, dynamic_img_size=True))
    convert(model, "freqscale")
    blk = model.blocks[0]
    seen = {}
    fs = blk.freq_scale_1
    orig = fs.apply_tokens

    def spy(t, grid, p):
        seen["grid"], seen["p"] = grid, p
        return orig(t, grid, p)

    fs.apply_tokens = spy
    model(torch.randn(1, 3, 24, 40))
    assert seen == {"grid": (3, 5), "p": 2}


def test_options_select_blocks_and_layers():
    model = _model("vit_tiny_patch16_224", dict(img_size=32, patch_size=8, depth=3))
    convert(model, "fdam", blocks=[1], freqscale_mode="dynamic", freqscale_num_filters=2, attinv_init_value=1e-3)
    assert not isinstance(model.blocks[0], FreqBlock) and not isinstance(model.blocks[2], FreqBlock)
    blk = model.blocks[1]
    assert isinstance(blk.attn.filter, AttInv) and torch.all(blk.attn.filter.lf_gamma == 1e-3)
    assert isinstance(blk.freq_scale_2, FreqScale) and blk.freq_scale_2.mode == "dynamic"
    assert blk.freq_scale_2.complex_weights.shape == (2, 192, 14, 8)
    model(torch.randn(1, 3, 32, 32))


def test_copies_and_pickles_pass_the_grid_and_store_none():
    """A deep copy (EMA) and a pickled model compute what the original does at a new size; no forward writes a grid on a block."""
    torch.manual_seed(0)
    model = convert(
        _model("vit_tiny_patch16_224", dict(img_size=32, patch_size=8, depth=1, dynamic_img_size=True)),
        "fdam",
        freqscale_init_std=0.02,
    ).eval()  # non-identity filters: the grid shapes the output
    x = torch.randn(1, 3, 16, 24)
    with torch.no_grad():
        want = model(x)
        twin = copy.deepcopy(model)
        torch.testing.assert_close(twin(x), want)
        buf = io.BytesIO()
        torch.save(model, buf)
        buf.seek(0)
        loaded = torch.load(buf, weights_only=False)
        torch.testing.assert_close(loaded(x), want)
    assert isinstance(loaded, VisionTransformer) and type(loaded) is type(model)
    assert all(m.blocks[0].grid_size is None for m in (model, twin, loaded))


def test_unconverted_blocks_and_intermediates_at_a_new_size():
    """forward_intermediates of a partly converted dynamic-size ViT equals the blocks run by hand with the grid passed."""
    torch.manual_seed(1)
    model = convert(
        _model("deit_tiny_distilled_patch16_224", dict(img_size=32, patch_size=8, depth=3, dynamic_img_size=True)),
        "freqscale",
        blocks=[1],
        freqscale_init_std=0.02,
    ).eval()
    x = torch.randn(2, 3, 24, 40)
    with torch.no_grad():
        final, feats = model.forward_intermediates(x, indices=[0, 1, 2], output_fmt="NLC")
        t = model.norm_pre(model.patch_drop(model._pos_embed(model.patch_embed(x))))
        ref = []
        for blk in model.blocks:
            t = blk(t, grid_size=(3, 5), num_prefix_tokens=2) if isinstance(blk, FreqBlock) else blk(t)
            ref.append(t[:, 2:])
    for got, want in zip(feats, ref):
        torch.testing.assert_close(got, want)
    torch.testing.assert_close(final, model.norm(t))
    torch.testing.assert_close(model.forward_features(x), model.norm(t))


def test_errors():
    with pytest.raises(FreqkitError, match="vit_\\*, deit_\\*"):
        convert(timm.create_model("resnet18", num_classes=2), "fdam")
    model = _model("vit_tiny_patch16_224", dict(img_size=32, patch_size=8, depth=1))
    with pytest.raises(FreqkitError, match="unknown option 'freqscale'|unknown option"):
        convert(model, "fdam", freqscale=3)
    with pytest.raises(FreqkitError, match="unknown mode"):
        convert(model, "freqscale", freqscale_mode="adaptive")
