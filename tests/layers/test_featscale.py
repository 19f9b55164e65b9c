"""FeatScale: the per-channel DC / high-frequency re-weighting, applied once (double_add only for conformance)."""

from __future__ import annotations

import json

import pytest
import torch
from conformance import find_fixture
from timm.layers import Mlp
from torch import nn

from freqkit.errors import FreqkitError
from freqkit.layers import Attention, FeatScale, FreqBlock

B, N, C = 2, 9, 16
FIXTURE = find_fixture("featscale_block_released.safetensors")


def _random(fs: FeatScale) -> FeatScale:
    with torch.no_grad():
        fs.lamb1.copy_(torch.randn(fs.dim))
        fs.lamb2.copy_(torch.randn(fs.dim))
    return fs


def test_matches_the_formula_in_float64():
    fs = _random(FeatScale(C)).double()
    z = torch.randn(B, N, C, dtype=torch.float64)
    mean = z.sum(1, keepdim=True) / N
    want = z + fs.lamb1 * mean + fs.lamb2 * (z - mean)
    torch.testing.assert_close(fs(z), want)


def test_double_add_adds_the_terms_twice():
    fs = _random(FeatScale(C, double_add=True)).double()
    z = torch.randn(B, N, C, dtype=torch.float64)
    mean = z.mean(1, keepdim=True)
    torch.testing.assert_close(fs(z), z + 2 * (fs.lamb1 * mean + fs.lamb2 * (z - mean)))


def test_identity_at_init_is_exact():
    z = torch.randn(B, N, C)
    assert torch.equal(FeatScale(C)(z), z)


def test_spectral_meaning_of_the_two_scales():
    z = torch.randn(B, N, C, dtype=torch.float64)
    fs = FeatScale(C).double()
    with torch.no_grad():
        fs.lamb2.fill_(-1.0)  # remove the high-frequency part: every token becomes (1 + s_d) mean
        fs.lamb1.fill_(0.5)
    out = fs(z)
    torch.testing.assert_close(out, 1.5 * z.mean(1, keepdim=True).expand_as(z))
    with torch.no_grad():
        fs.lamb1.fill_(-1.0)  # remove the DC part: tokens become zero-mean, the rest untouched
        fs.lamb2.zero_()
    out = fs(z)
    torch.testing.assert_close(out.mean(1), torch.zeros(B, C, dtype=z.dtype))
    torch.testing.assert_close(out, z - z.mean(1, keepdim=True))


def test_in_freqblock_it_scales_only_the_attention_branch():
    attn = Attention(C, 4, qkv_bias=True)
    mlp = Mlp(C, 4 * C)
    n1, n2 = nn.LayerNorm(C), nn.LayerNorm(C)
    fs = _random(FeatScale(C))
    block = FreqBlock(attn=attn, mlp=mlp, norm1=n1, norm2=n2, feat_scale=fs).eval()
    x = torch.randn(B, N, C)
    a = attn(n1(x))
    m = a.mean(1, keepdim=True)
    h = x + a + fs.lamb1 * m + fs.lamb2 * (a - m)
    torch.testing.assert_close(block(x), h + mlp(n2(h)))


def test_wrong_shape_is_a_clear_error():
    with pytest.raises(FreqkitError, match=r"\(B, N, 16\)"):
        FeatScale(C)(torch.randn(B, C, 3, 3))


def test_bfloat16_runs_in_input_dtype():
    fs = _random(FeatScale(C))
    z = torch.randn(B, N, C, dtype=torch.bfloat16)
    assert fs(z).dtype == torch.bfloat16


@pytest.mark.skipif(FIXTURE is None, reason="released FeatScale fixture not available")
def test_double_add_reproduces_the_released_block_and_default_does_not():
    from safetensors import safe_open

    with safe_open(str(FIXTURE), "pt") as f:
        meta = json.loads(f.metadata()["json"])
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    dim, heads = meta["args"]["dim"], meta["args"]["num_heads"]
    state = {k[len("state.") :]: v for k, v in tensors.items() if k.startswith("state.")}
    state = {{"lamb1": "feat_scale.lamb1", "lamb2": "feat_scale.lamb2"}.get(k, k): v for k, v in state.items()}
    errors = {}
    for double in (False, True):
        block = FreqBlock(
            attn=Attention(dim, heads, qkv_bias=True),
            mlp=Mlp(dim, 4 * dim),
            norm1=nn.LayerNorm(dim, eps=1e-5),
            norm2=nn.LayerNorm(dim, eps=1e-5),
            feat_scale=FeatScale(dim, double_add=double),
        ).eval()
        block.load_state_dict(state)
        with torch.no_grad():
            errors[double] = (block(tensors["input.x"]) - tensors["output.y"]).abs().max().item()
    assert errors[True] <= 1e-4
    assert errors[False] > 1e-2
