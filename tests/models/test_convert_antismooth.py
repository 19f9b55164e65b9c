"""freqkit.convert with attnscale / featscale / gfsa: weights kept, exact identity at init, composition."""

from __future__ import annotations

import pytest
import timm
import torch

import freqkit
from freqkit.errors import FreqkitError
from freqkit.layers import GFSA, AttnScale, FeatScale, FreqBlock

DEPTH, DIM, HEADS = 2, 192, 3


def _vit(**kw):
    return timm.create_model("vit_tiny_patch16_224", depth=DEPTH, img_size=32, **kw).eval()


def _x():
    return torch.randn(2, 3, 32, 32)


@pytest.mark.parametrize(
    "method, extra_params",
    [("attnscale", HEADS * DEPTH), ("gfsa", HEADS * DEPTH), ("featscale", 2 * DIM * DEPTH)],
)
def test_convert_keeps_weights_and_is_exactly_the_identity(method, extra_params):
    model = _vit()
    x = _x()
    with torch.no_grad():
        before = model(x)
    params = {n: p for n, p in model.named_parameters()}
    freqkit.convert(model, method)
    assert all(isinstance(b, FreqBlock) for b in model.blocks)
    after_params = list(model.parameters())
    # every original parameter is the same tensor object, and only the method's scalars were added
    assert all(any(p is q for q in after_params) for p in params.values())
    assert sum(p.numel() for p in after_params) - sum(p.numel() for p in params.values()) == extra_params
    with torch.no_grad():
        assert torch.equal(model(x), before)


def test_converted_model_trains_the_new_scalars():
    model = freqkit.convert(_vit(), ["gfsa", "featscale"])
    model.train()
    model(_x()).logsumexp(-1).sum().backward()
    for block in model.blocks:
        assert block.attn.filter.lamb.grad.abs().sum() > 0
        assert block.feat_scale.lamb1.grad.abs().sum() > 0 and block.feat_scale.lamb2.grad.abs().sum() > 0


@pytest.mark.parametrize("methods", [["attnscale", "featscale"], ["gfsa", "featscale"]])
def test_methods_compose(methods):
    model = _vit()
    x = _x()
    with torch.no_grad():
        before = model(x)
    freqkit.convert(model, methods)
    filt = AttnScale if methods[0] == "attnscale" else GFSA
    assert all(isinstance(b.attn.filter, filt) and isinstance(b.feat_scale, FeatScale) for b in model.blocks)
    with torch.no_grad():
        assert torch.equal(model(x), before)


def test_fdam_composes_with_featscale():
    model = _vit()
    x = _x()
    with torch.no_grad():
        before = model(x)
    freqkit.convert(model, ["fdam", "featscale"])
    block = model.blocks[0]
    assert isinstance(block.feat_scale, FeatScale) and block.freq_scale_1 is not None and block.attn.filter is not None
    with torch.no_grad():
        assert torch.equal(model(x), before)  # convert starts AttInv's gammas and FreqScale's bank at exactly 0


def test_two_attention_filters_are_a_clear_error():
    with pytest.raises(FreqkitError, match="attn filter"):
        freqkit.convert(_vit(), ["attnscale", "gfsa"])


def test_options_blocks_and_prefix_count():
    model = freqkit.convert(_vit(reg_tokens=3), "attnscale", blocks=[1], attnscale_include_prefix=False)
    assert not isinstance(model.blocks[0], FreqBlock)
    filt = model.blocks[1].attn.filter
    assert filt.num_prefix_tokens == 4 and not filt.include_prefix  # CLS + 3 registers
    model = freqkit.convert(_vit(), "gfsa", gfsa_K=4)
    assert model.blocks[0].attn.filter.K == 4
    with pytest.raises(FreqkitError, match="unknown option"):
        freqkit.convert(_vit(), "gfsa", K=4)


def test_prefix_excluded_uniform_ignores_the_register_values():
    # with include_prefix=False the AttnScale U V must not see prefix-token values at all:
    # compare the filter against its explicit formula on the model's first block
    model = freqkit.convert(_vit(reg_tokens=2), "attnscale", attnscale_include_prefix=False)
    attn = model.blocks[0].attn
    with torch.no_grad():
        attn.filter.lamb.copy_(torch.tensor([0.7, -0.4, 1.3]))
    tokens = torch.randn(2, 1 + 2 + 4, DIM)
    a = attn.attention_matrix(tokens)
    u = torch.zeros_like(a)
    u[..., 3:] = 1.0 / 4
    w = attn.filter.lamb.view(1, -1, 1, 1)
    v = attn.qkv_heads(tokens)[2]
    want = attn.proj(((u + (1 + w) * (a - u)) @ v).transpose(1, 2).reshape(tokens.shape))
    with torch.no_grad():
        torch.testing.assert_close(attn(tokens), want, atol=1e-5, rtol=1e-5)
