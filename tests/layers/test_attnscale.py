"""AttnScale: fused (1 + w) A V - w U V against the explicit A' = U + (1 + w)(A - U), masks, prefix tokens."""

from __future__ import annotations

import pytest
import torch

from freqkit.errors import FreqkitError
from freqkit.layers import Attention, AttnScale

B, N, C, H = 2, 11, 32, 4


def _attn(filt=None, fused=True) -> Attention:
    return Attention(C, H, qkv_bias=True, filter=filt, fused=fused).double().eval()


def _explicit(attn: Attention, x: torch.Tensor, u: torch.Tensor, w: torch.Tensor, mask=None, causal=False) -> torch.Tensor:
    """proj(merge(A' V)) with A' = U + (1 + w)(A - U) built as a matrix; u (..., N, N) rows sum to 1."""
    a = attn.attention_matrix(x, attn_mask=mask, is_causal=causal)
    a2 = u + (1 + w.view(1, -1, 1, 1)) * (a - u)
    v = attn.qkv_heads(x)[2]
    out = (a2 @ v).transpose(1, 2).reshape(x.shape)
    return attn.proj(out)


def _uniform(valid: torch.Tensor) -> torch.Tensor:
    """Row-normalized 0/1 matrix: the uniform attention over each query's valid keys."""
    valid = valid.double()
    return valid / valid.sum(-1, keepdim=True)


@pytest.fixture
def x() -> torch.Tensor:
    return torch.randn(B, N, C, dtype=torch.float64)


def _with_random_w(filt: AttnScale) -> AttnScale:
    with torch.no_grad():
        filt.lamb.copy_(torch.randn(H, dtype=filt.lamb.dtype))
    return filt


@pytest.mark.parametrize("fused", [True, False])
def test_matches_explicit_matrix_without_mask(x, fused):
    attn = _attn(_with_random_w(AttnScale(H)), fused=fused)
    want = _explicit(attn, x, _uniform(torch.ones(N, N)), attn.filter.lamb)
    torch.testing.assert_close(attn(x), want)


def test_identity_at_init_is_exact(x):
    plain = _attn()
    scaled = _attn(AttnScale(H))
    scaled.load_state_dict({**plain.state_dict(), "filter.lamb": torch.zeros(H)})
    assert torch.equal(scaled(x), plain(x))


def test_padding_mask_gives_masked_keys_no_weight(x):
    # batch 0 keeps 7 keys, batch 1 keeps all 11
    valid = torch.ones(B, 1, 1, N, dtype=torch.bool)
    valid[0, ..., 7:] = False
    attn = _attn(_with_random_w(AttnScale(H)))
    want = _explicit(attn, x, _uniform(valid.expand(B, 1, N, N)), attn.filter.lamb, mask=valid)
    got = attn(x, attn_mask=valid)
    torch.testing.assert_close(got, want)
    # property: padded tokens cannot influence the kept queries, through A or through U
    x2 = x.clone()
    x2[0, 7:] = torch.randn(N - 7, C, dtype=x.dtype) * 10
    torch.testing.assert_close(attn(x2, attn_mask=valid)[0, :7], got[0, :7])


def test_additive_float_mask_equals_bool_mask(x):
    valid = torch.rand(B, 1, N, N) > 0.3
    valid |= torch.eye(N, dtype=torch.bool)
    bias = torch.zeros(valid.shape, dtype=x.dtype).masked_fill(~valid, float("-inf"))
    attn = _attn(_with_random_w(AttnScale(H)))
    torch.testing.assert_close(attn(x, attn_mask=bias), attn(x, attn_mask=valid))
    want = _explicit(attn, x, _uniform(valid), attn.filter.lamb, mask=valid)
    torch.testing.assert_close(attn(x, attn_mask=valid), want)


def test_causal_uniform_covers_only_past_keys(x):
    attn = _attn(_with_random_w(AttnScale(H)))
    want = _explicit(attn, x, _uniform(torch.ones(N, N).tril()), attn.filter.lamb, causal=True)
    got = attn(x, is_causal=True)
    torch.testing.assert_close(got, want)
    x2 = x.clone()
    x2[:, 6:] += 5.0
    torch.testing.assert_close(attn(x2, is_causal=True)[:, :6], got[:, :6])


@pytest.mark.parametrize("masked", [False, True])
def test_exclude_prefix_tokens_from_uniform(x, masked):
    p = 2
    attn = _attn(_with_random_w(AttnScale(H, include_prefix=False, num_prefix_tokens=p)))
    valid = torch.ones(B, 1, 1, N, dtype=torch.bool)
    if masked:
        valid[1, ..., 8:] = False
    u_valid = valid.expand(B, 1, N, N).clone()
    u_valid[..., :p] = False
    want = _explicit(attn, x, _uniform(u_valid), attn.filter.lamb, mask=valid if masked else None)
    got = attn(x, attn_mask=valid if masked else None)
    torch.testing.assert_close(got, want)
    # the prefix-excluding U differs from the released all-token U
    attn.filter.include_prefix = True
    assert (attn(x, attn_mask=valid if masked else None) - got).abs().max() > 1e-3


def test_exclude_prefix_needs_the_prefix_count(x):
    attn = _attn(AttnScale(H, include_prefix=False))
    with pytest.raises(FreqkitError, match="num_prefix_tokens"):
        attn(x)


def test_rows_of_the_modified_attention_sum_to_one(x):
    # A' V with V = all-ones gives the row sums of A' (it only shifts the high-pass part)
    filt = _with_random_w(AttnScale(H)).double()
    attn = _attn(filt)
    q, k, _ = attn.qkv_heads(x)
    ones = torch.ones(B, H, N, 5, dtype=x.dtype)
    from freqkit.layers import AttentionContext

    ctx = AttentionContext(q=q, k=k, v=ones, x=x, attend=lambda t: torch.nn.functional.scaled_dot_product_attention(q, k, t))
    torch.testing.assert_close(filt(ctx.attend(ones), ctx), ones)


def test_wrong_head_count_is_a_clear_error(x):
    filt = AttnScale(3)
    attn = Attention(C, H, filter=filt).double()
    with pytest.raises(FreqkitError, match="heads"):
        attn(x)


def test_gradient_reaches_w_and_bfloat16_autocast_runs():
    attn = Attention(C, H, filter=AttnScale(H))
    x = torch.randn(B, N, C)
    attn(x).square().sum().backward()
    assert attn.filter.lamb.grad is not None and attn.filter.lamb.grad.abs().sum() > 0
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = attn(x)
    assert y.dtype == torch.bfloat16 and torch.isfinite(y).all()
