"""The shared Attention: fused (SDPA) path == explicit-matrix path == timm == a hand-written softmax,
with and without masks; the filter context (attend, uniform) computes what it says."""

from __future__ import annotations

import math

import pytest
import torch
from timm.layers import Attention as TimmAttention

from freqkit.errors import FreqkitError
from freqkit.layers import Attention, AttentionFilter

B, N, C, HEADS = 2, 7, 12, 3
D = C // HEADS


def _by_hand(attn: Attention, x: torch.Tensor, bias: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(A (B, heads, N, N), output (B, N, C)) from the weights with plain tensor algebra."""
    qkv = x @ attn.qkv.weight.t() + attn.qkv.bias
    q, k, v = qkv.split(C, dim=-1)
    heads = lambda t: t.view(B, N, HEADS, D).transpose(1, 2)  # noqa: E731
    logits = heads(q) @ heads(k).transpose(-1, -2) / math.sqrt(D)
    if bias is not None:
        logits = logits + bias
    a = logits.softmax(-1)
    o = (a @ heads(v)).transpose(1, 2).reshape(B, N, C)
    return a, o @ attn.proj.weight.t() + attn.proj.bias


def _pair(**kw) -> tuple[Attention, Attention]:
    fused = Attention(C, HEADS, qkv_bias=True, **kw).eval()
    explicit = Attention(C, HEADS, qkv_bias=True, fused=False, **kw).eval()
    explicit.load_state_dict(fused.state_dict())
    return fused, explicit


def test_fused_equals_explicit_equals_hand_written():
    fused, explicit = _pair()
    x = torch.randn(B, N, C)
    a_ref, y_ref = _by_hand(fused, x)
    torch.testing.assert_close(fused(x), y_ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(explicit(x), y_ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(fused.attention_matrix(x), a_ref, atol=1e-6, rtol=1e-5)


def test_timm_weights_are_shared_and_outputs_match():
    timm_attn = TimmAttention(C, HEADS, qkv_bias=True, qk_norm=True, norm_layer=torch.nn.LayerNorm).eval()
    torch.nn.init.normal_(timm_attn.q_norm.weight)  # non-trivial q norm
    ours = Attention.from_timm(timm_attn).eval()
    assert ours.qkv is timm_attn.qkv and ours.proj is timm_attn.proj and ours.q_norm is timm_attn.q_norm
    x = torch.randn(B, N, C)
    torch.testing.assert_close(ours(x), timm_attn(x), atol=1e-6, rtol=1e-5)
    ours.fused = False
    torch.testing.assert_close(ours(x), timm_attn(x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind", ["bool", "float", "causal"])
def test_masks_fused_explicit_and_reference_agree(kind):
    fused, explicit = _pair()
    x = torch.randn(B, N, C)
    mask, causal = None, False
    keep = torch.rand(B, 1, N, N) > 0.3
    keep[..., 0] = True  # every query keeps at least one key
    if kind == "bool":
        mask = keep
        bias = torch.zeros(B, 1, N, N).masked_fill(~keep, float("-inf"))
    elif kind == "float":
        mask = torch.randn(B, 1, N, N)
        bias = mask
    else:
        causal = True
        bias = torch.zeros(N, N).masked_fill(~torch.ones(N, N, dtype=torch.bool).tril(), float("-inf"))
    a_ref, y_ref = _by_hand(fused, x, bias)
    for m in (fused, explicit):
        torch.testing.assert_close(m(x, attn_mask=mask, is_causal=causal), y_ref, atol=1e-5, rtol=1e-5)
    a = explicit.attention_matrix(x, attn_mask=mask, is_causal=causal)
    torch.testing.assert_close(a, a_ref, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(a.sum(-1), torch.ones(B, HEADS, N))


class _Probe(AttentionFilter):
    """Records what the context computes, returns the output unchanged."""

    def forward(self, out, ctx):
        self.out, self.v = out, ctx.v
        self.attend_v, self.uniform_v = ctx.attend(ctx.v), ctx.uniform(ctx.v)
        self.x = ctx.x
        return out


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("masked", [False, True])
def test_context_attend_and_uniform(fused, masked):
    probe = _Probe()
    attn = Attention(C, HEADS, qkv_bias=True, filter=probe, fused=fused).eval()
    x = torch.randn(B, N, C)
    keep = torch.ones(B, 1, N, N, dtype=torch.bool)
    keep[..., -2:] = False  # the last two keys are padding
    mask = keep if masked else None
    attn(x, attn_mask=mask)
    a = attn.attention_matrix(x, attn_mask=mask)
    torch.testing.assert_close(probe.attend_v, a @ probe.v, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(probe.out, a @ probe.v, atol=1e-5, rtol=1e-5)
    valid = keep.float() if masked else torch.ones(B, 1, N, N)
    u = valid / valid.sum(-1, keepdim=True)  # uniform over each query's valid keys
    torch.testing.assert_close(probe.uniform_v, u @ probe.v, atol=1e-5, rtol=1e-5)
    assert probe.x is x


def test_errors_name_the_problem():
    with pytest.raises(FreqkitError, match="not divisible by num_heads"):
        Attention(10, 3)
    with pytest.raises(FreqkitError, match=r"\(B, N, 12\)"):
        Attention(C, HEADS)(torch.randn(2, 5, 8))
