"""Attention frequency responses (FDAM supplementary, Secs. A and B) against brute-force DFTs and the low-pass theorem."""

import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from freqkit.errors import FreqkitError
from freqkit.spectral import (
    attention_token_spectrum,
    global_response,
    local_response,
    local_response_summary,
    radial_profile,
)

F64 = torch.float64


def _softmax_attention(b, heads, n, d=8, scale=1.0, dtype=F64):
    """A = softmax(q k^T / sqrt(d)) of random queries and keys, (B, heads, N, N)."""
    q = torch.randn(b, heads, n, d, dtype=dtype) * scale
    k = torch.randn(b, heads, n, d, dtype=dtype)
    return torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d), dim=-1)


def _circulant(kernel: torch.Tensor) -> torch.Tensor:
    """(HW, HW) matrix of the circular convolution y(p, q) = sum w(p - p', q - q') x(p', q')."""
    h, w = kernel.shape
    a = torch.zeros(h * w, h * w, dtype=kernel.dtype)
    for p in range(h):
        for q in range(w):
            for pp in range(h):
                for qq in range(w):
                    a[p * w + q, pp * w + qq] = kernel[(p - pp) % h, (q - qq) % w]
    return a


def _apply_tokens(a: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Apply a token operator (HW, HW) to maps (B, C, H, W)."""
    b, c, h, w = v.shape
    return (v.reshape(b, c, h * w) @ a.T).reshape(b, c, h, w)


# ---------------------------------------------------------------- global response (A.1)


@pytest.mark.parametrize("mode", ["aggregate", "per_channel"])
def test_identity_operator_has_unit_global_response(mode):
    v = torch.randn(2, 3, 5, 6, dtype=F64)
    r = global_response(v, v.clone(), mode=mode, eps=1e-12)
    assert r.shape == ((2, 5, 6) if mode == "aggregate" else (2, 3, 5, 6))
    torch.testing.assert_close(r, torch.ones_like(r), rtol=0, atol=1e-9)


def test_global_response_matches_bruteforce(ref):
    v = torch.randn(2, 3, 4, 5, dtype=F64)
    y = torch.randn(2, 3, 4, 5, dtype=F64)
    fv, fy = np.abs(ref.dft2(v.numpy())), np.abs(ref.dft2(y.numpy()))
    per = ref.center(fy / (fv + 1e-6))
    agg = ref.center(fy.sum(axis=1) / (fv.sum(axis=1) + 1e-6))
    np.testing.assert_allclose(global_response(v, y, "per_channel").numpy(), per, rtol=1e-9)
    np.testing.assert_allclose(global_response(v, y).numpy(), agg, rtol=1e-9)


def test_circulant_attention_response_is_its_kernel_spectrum_and_stacks(ref):
    # attention that is a convolution (eq. 7): per-channel response = |F(kernel)| (eq. 10);
    # L stacked layers: product of the responses (eq. 25)
    h, w = 4, 5
    kernels = [torch.softmax(torch.randn(h * w, dtype=F64), 0).reshape(h, w) for _ in range(3)]
    v = torch.randn(1, 2, h, w, dtype=F64)
    y = v
    expect = np.ones((h, w))
    for kern in kernels:
        y = _apply_tokens(_circulant(kern), y)
        expect = expect * ref.center(np.abs(ref.dft2(kern.numpy())))
        r = global_response(v, y, "per_channel", eps=0.0)
        np.testing.assert_allclose(r[0, 0].numpy(), expect, rtol=1e-8)
        np.testing.assert_allclose(r[0, 1].numpy(), expect, rtol=1e-8)


def test_global_response_errors():
    with pytest.raises(FreqkitError, match="differ"):
        global_response(torch.zeros(1, 2, 3, 3), torch.zeros(1, 2, 3, 4))
    with pytest.raises(FreqkitError, match="mode"):
        global_response(torch.zeros(1, 2, 3, 3), torch.zeros(1, 2, 3, 3), mode="mean")


# ---------------------------------------------------------------- local response (A.2) and low-pass (B)


def test_softmax_rows_are_low_pass():
    h, w = 4, 5
    attn = _softmax_attention(2, 3, h * w, scale=3.0)
    r = local_response(attn, (h, w))
    assert r.shape == (2, 3, h * w, h, w)
    dc = r[..., h // 2, w // 2]
    torch.testing.assert_close(dc, torch.ones_like(dc), rtol=0, atol=1e-12)  # eq. 13
    others = r.clone()
    others[..., h // 2, w // 2] = 0
    assert others.max().item() < 1 - 1e-6  # eq. 23: strictly inside the unit circle


def test_one_hot_rows_are_all_pass_and_uniform_rows_pass_only_dc():
    h, w = 3, 4
    n = h * w
    perm = torch.eye(n, dtype=F64)[torch.randperm(n)]
    r = local_response(perm[None, None], (h, w))
    torch.testing.assert_close(r, torch.ones_like(r), rtol=0, atol=1e-12)
    uniform = torch.full((1, 2, n, n), 1.0 / n, dtype=F64)
    r = local_response(uniform, (h, w))
    expect = torch.zeros_like(r)
    expect[..., h // 2, w // 2] = 1
    torch.testing.assert_close(r, expect, rtol=0, atol=1e-12)


def test_stacked_filters_multiply_responses(ref):
    # eq. 25 via the convolution theorem: F(w1 (*) w2) = F(w1) F(w2), (*) the circular convolution
    h, w = 3, 5
    w1 = torch.softmax(torch.randn(h * w, dtype=F64), 0).reshape(h, w)
    w2 = torch.softmax(torch.randn(h * w, dtype=F64), 0).reshape(h, w)
    conv = torch.zeros(h, w, dtype=F64)
    for p in range(h):
        for q in range(w):
            conv[p, q] = sum(w1[a, b] * w2[(p - a) % h, (q - b) % w] for a in range(h) for b in range(w))
    np.testing.assert_allclose(ref.dft2(conv.numpy()), ref.dft2(w1.numpy()) * ref.dft2(w2.numpy()), atol=1e-12)

    def resp(kern):
        return local_response(kern.reshape(1, 1, 1, h * w), (h, w), queries="all")

    torch.testing.assert_close(resp(conv), resp(w1) * resp(w2), rtol=0, atol=1e-12)


def test_local_response_matches_bruteforce_with_prefix_tokens(ref):
    h, w, p = 3, 4, 2
    n = p + h * w
    attn = _softmax_attention(2, 2, n)
    r = local_response(attn, (h, w), num_prefix_tokens=p)
    rows = attn[:, :, p:, p:].reshape(2, 2, h * w, h, w).numpy()
    np.testing.assert_allclose(r.numpy(), ref.center(np.abs(ref.dft2(rows))), atol=1e-12)
    # DC = the attention mass left on spatial keys once prefix keys are dropped
    torch.testing.assert_close(r[..., h // 2, w // 2], attn[:, :, p:, p:].sum(-1))
    r_all = local_response(attn, (h, w), num_prefix_tokens=p, queries="all")
    assert r_all.shape == (2, 2, n, h, w)
    torch.testing.assert_close(r_all[:, :, p:], r)


@pytest.mark.parametrize("chunk", [1, 5, 12, 1000])
def test_local_response_chunking_is_exact(chunk):
    attn = _softmax_attention(1, 2, 1 + 12)
    full = local_response(attn, (3, 4), 1, chunk_size=1000)
    torch.testing.assert_close(local_response(attn, (3, 4), 1, chunk_size=chunk), full, rtol=0, atol=0)


def _bruteforce_summary(attn, grid, p, bins, queries="spatial"):
    h, w = grid
    full = local_response(attn, grid, p, queries=queries)
    prof = radial_profile(torch.log1p(full), bins)
    return {
        "mean": prof.mean(dim=(1, 2)),
        "std": prof.std(dim=(1, 2), correction=0),
        "dc": full[..., h // 2, w // 2].mean(dim=(1, 2)),
    }


@pytest.mark.parametrize("chunk", [1, 3, 7, 20, 256])
@pytest.mark.parametrize("grid,p", [((4, 5), 1), ((3, 3), 0)])
def test_local_response_summary_matches_full_response(chunk, grid, p):
    attn = _softmax_attention(2, 3, p + grid[0] * grid[1], scale=2.0)
    got = local_response_summary(attn, grid, p, bins=6, chunk_size=chunk)
    expect = _bruteforce_summary(attn, grid, p, 6)
    assert set(got) == {"mean", "std", "dc"}
    for key in expect:
        torch.testing.assert_close(got[key], expect[key], rtol=1e-10, atol=1e-12)
    got_all = local_response_summary(attn, grid, p, bins=6, chunk_size=chunk, queries="all")
    for key, val in _bruteforce_summary(attn, grid, p, 6, queries="all").items():
        torch.testing.assert_close(got_all[key], val, rtol=1e-10, atol=1e-12)


def test_local_response_summary_float32_chunks_agree():
    attn = _softmax_attention(1, 2, 64, dtype=torch.float32, scale=3.0)
    whole = local_response_summary(attn, (8, 8), chunk_size=64)
    for chunk in (1, 9):
        part = local_response_summary(attn, (8, 8), chunk_size=chunk)
        for key in whole:
            torch.testing.assert_close(part[key], whole[key], rtol=1e-5, atol=1e-6)


def test_local_response_summary_on_a_64x64_grid():
    n = 64 * 64
    logits = torch.randn(1, 1, n, n)
    attn = torch.softmax(logits * 2.0, dim=-1)
    del logits
    out = local_response_summary(attn, (64, 64), bins=16, chunk_size=512)
    assert out["mean"].shape == (1, 16) and out["std"].shape == (1, 16)
    torch.testing.assert_close(out["dc"], torch.ones(1), rtol=0, atol=1e-4)
    assert torch.isfinite(out["mean"]).all() and (out["std"] >= 0).all()
    # log(1 + |F|) <= log 2 for a low-pass row; random rows sit well below at high frequency
    assert out["mean"].max() <= math.log(2) + 1e-5 and out["mean"][0, -1] < out["mean"][0, 0]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    h=st.integers(1, 5),
    w=st.integers(1, 5),
    p=st.integers(0, 2),
    scale=st.floats(0.0, 6.0),
    chunk=st.integers(1, 30),
)
def test_property_low_pass_and_chunk_invariance(h, w, p, scale, chunk):
    n = p + h * w
    attn = _softmax_attention(1, 2, n, scale=scale)
    r = local_response(attn, (h, w), p, chunk_size=chunk)
    mass = attn[:, :, p:, p:].sum(-1)
    torch.testing.assert_close(r[..., h // 2, w // 2], mass, rtol=0, atol=1e-12)
    assert (r <= mass[..., None, None] + 1e-12).all()  # |sum w e^{..}| <= sum w (eq. 20)
    got = local_response_summary(attn, (h, w), p, bins=4, chunk_size=chunk)
    for key, val in _bruteforce_summary(attn, (h, w), p, 4).items():
        torch.testing.assert_close(got[key], val, rtol=1e-10, atol=1e-12)


def test_local_response_errors():
    attn = torch.rand(1, 2, 10, 10)
    with pytest.raises(FreqkitError, match="keys"):
        local_response(attn, (3, 4))
    with pytest.raises(FreqkitError, match="queries='all'"):
        local_response(torch.rand(1, 2, 5, 10), (3, 3), 1)
    with pytest.raises(FreqkitError, match="queries"):
        local_response(attn, (3, 3), 1, queries="prefix")
    with pytest.raises(FreqkitError, match="chunk_size"):
        local_response_summary(attn, (3, 3), 1, chunk_size=0)
    with pytest.raises(FreqkitError, match=r"\(B, heads, Nq, N\)"):
        local_response(attn[0], (3, 3), 1)


# ---------------------------------------------------------------- attention token spectrum


def test_attention_token_spectrum_matches_explicit_dft_matrix():
    n = 7
    idx = np.arange(n)
    dft = np.exp(-2j * np.pi * np.outer(idx, idx) / n) / np.sqrt(n)  # unitary DFT
    attn = _softmax_attention(2, 3, n)
    m = dft @ attn.numpy() @ dft.conj().T
    expect = np.sqrt((np.abs(m) ** 2).sum(axis=-1))
    got = attention_token_spectrum(attn)
    assert got.shape == (2, 3, n)
    np.testing.assert_allclose(got.numpy(), expect, atol=1e-12)
    # a row-stochastic matrix keeps the whole DC: F A F^H [0, 0] = 1
    np.testing.assert_allclose(m[..., 0, 0], 1.0, atol=1e-12)


def test_attention_token_spectrum_of_identity_and_uniform():
    n = 6
    eye = attention_token_spectrum(torch.eye(n, dtype=F64))
    torch.testing.assert_close(eye, torch.ones(n, dtype=F64))
    uni = attention_token_spectrum(torch.full((n, n), 1.0 / n, dtype=F64))
    torch.testing.assert_close(uni, torch.tensor([1.0] + [0.0] * (n - 1), dtype=F64), rtol=0, atol=1e-12)
    with pytest.raises(FreqkitError, match="square"):
        attention_token_spectrum(torch.rand(2, 3, 4))
