"""GFSA: two fused passes A (A V) against H = w0 I + w1 A + wK (A + (K-1)(A^2 - A)) built with matrix_power."""

from __future__ import annotations

import pytest
import torch

from freqkit.errors import FreqkitError
from freqkit.layers import GFSA, Attention

B, N, C, H = 2, 10, 24, 3


def _attn(filt=None, fused=True) -> Attention:
    return Attention(C, H, qkv_bias=True, filter=filt, fused=fused).double().eval()


def _randomize(filt: GFSA) -> GFSA:
    with torch.no_grad():
        for p in filt.parameters():
            p.copy_(torch.randn_like(p))
    return filt


def _explicit(attn: Attention, x: torch.Tensor, mask=None, causal=False) -> torch.Tensor:
    """proj(merge(H V)) with the graph filter H built as an (N, N) matrix per head."""
    f = attn.filter
    a = attn.attention_matrix(x, attn_mask=mask, is_causal=causal)
    eye = torch.eye(N, dtype=a.dtype).expand_as(a)
    w0 = torch.zeros(H, dtype=a.dtype) if f.w0 is None else f.w0
    w1 = torch.ones(H, dtype=a.dtype) if f.w1 is None else f.w1
    col = lambda w: w.view(1, -1, 1, 1)  # noqa: E731
    a_sq = torch.linalg.matrix_power(a, 2)
    h = col(w0) * eye + col(w1) * a + col(f.lamb) * (a + (f.K - 1) * (a_sq - a))
    v = attn.qkv_heads(x)[2]
    return attn.proj((h @ v).transpose(1, 2).reshape(x.shape))


@pytest.fixture
def x() -> torch.Tensor:
    return torch.randn(B, N, C, dtype=torch.float64)


@pytest.mark.parametrize("K", [3, 4])
@pytest.mark.parametrize("learn", [False, True])
@pytest.mark.parametrize("fused", [True, False])
def test_matches_explicit_polynomial_filter(x, K, learn, fused):
    attn = _attn(_randomize(GFSA(H, K=K, learn_w0=learn, learn_w1=learn)).double(), fused=fused)
    torch.testing.assert_close(attn(x), _explicit(attn, x))


def test_k2_is_exactly_the_square(x):
    # A + (2 - 1)(A^2 - A) = A^2: H = w1 A + wK A^2, checked against matrix_power directly
    attn = _attn(_randomize(GFSA(H, K=2)).double())
    a = attn.attention_matrix(x)
    h = a + attn.filter.lamb.view(1, -1, 1, 1) * torch.linalg.matrix_power(a, 2)
    v = attn.qkv_heads(x)[2]
    torch.testing.assert_close(attn(x), attn.proj((h @ v).transpose(1, 2).reshape(x.shape)))


def test_identity_at_init_is_exact(x):
    plain = _attn()
    gfsa = _attn(GFSA(H, K=4))
    gfsa.load_state_dict({**plain.state_dict(), "filter.lamb": torch.zeros(H)})
    assert torch.equal(gfsa(x), plain(x))


def test_padding_mask_is_respected(x):
    valid = torch.ones(B, 1, 1, N, dtype=torch.bool)
    valid[1, ..., 6:] = False
    attn = _attn(_randomize(GFSA(H, K=3)).double())
    got = attn(x, attn_mask=valid)
    torch.testing.assert_close(got, _explicit(attn, x, mask=valid))
    # masked tokens reach no kept query through A or through A^2
    x2 = x.clone()
    x2[1, 6:] = 10 * torch.randn(N - 6, C, dtype=x.dtype)
    torch.testing.assert_close(attn(x2, attn_mask=valid)[1, :6], got[1, :6])


def test_causal_mask_is_respected(x):
    attn = _attn(_randomize(GFSA(H, K=4, learn_w0=True)).double())
    got = attn(x, is_causal=True)
    torch.testing.assert_close(got, _explicit(attn, x, causal=True))
    x2 = x.clone()
    x2[:, 5:] -= 3.0
    torch.testing.assert_close(attn(x2, is_causal=True)[:, :5], got[:, :5])


def test_parameters_and_state_dict_names():
    assert set(dict(GFSA(H).named_parameters())) == {"lamb"}
    assert set(dict(GFSA(H, learn_w0=True, learn_w1=True).named_parameters())) == {"lamb", "w0", "w1"}
    g = GFSA(H, learn_w1=True)
    assert torch.equal(g.w1, torch.ones(H)) and torch.equal(g.lamb, torch.zeros(H))


@pytest.mark.parametrize("K", [1, 2.5, 0])
def test_bad_k_is_a_clear_error(K):
    with pytest.raises(FreqkitError, match="K must be an integer"):
        GFSA(H, K=K)


def test_gradient_reaches_all_learnable_coefficients():
    attn = Attention(C, H, filter=_randomize(GFSA(H, K=3, learn_w0=True, learn_w1=True)))
    attn(torch.randn(B, N, C)).square().sum().backward()
    for name, p in attn.filter.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
