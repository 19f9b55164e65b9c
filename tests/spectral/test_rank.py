"""Effective rank, stable rank and rank-collapse residual against closed forms and numpy."""

import math
import threading

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from freqkit.errors import FreqkitError
from freqkit.spectral import effective_rank, rank_collapse_residual, stable_rank
from freqkit.spectral.rank import singular_values

F64 = torch.float64


def _equal_singular_values(n: int, c: int, r: int, value: float = 3.0) -> torch.Tensor:
    """An (n, c) matrix whose r non-zero singular values all equal `value` (orthonormal factors by QR)."""
    u, _ = torch.linalg.qr(torch.randn(n, n, dtype=F64))
    v, _ = torch.linalg.qr(torch.randn(c, c, dtype=F64))
    return value * u[:, :r] @ v[:, :r].T


@pytest.mark.parametrize("r", [1, 2, 3, 5])
def test_effective_and_stable_rank_of_r_equal_singular_values(r):
    x = torch.stack([_equal_singular_values(6, 5, r), _equal_singular_values(6, 5, r, value=0.01)])
    torch.testing.assert_close(effective_rank(x), torch.full((2,), float(r), dtype=F64))
    torch.testing.assert_close(stable_rank(x), torch.full((2,), float(r), dtype=F64))


def test_effective_rank_matches_numpy_entropy():
    x = torch.randn(3, 7, 4, dtype=F64)
    for b in range(3):
        s = np.linalg.svd(x[b].numpy(), compute_uv=False)
        p = s / s.sum()
        expect = math.exp(-(p * np.log(p)).sum())
        assert effective_rank(x)[b].item() == pytest.approx(expect, rel=1e-12)
        assert effective_rank(x[b]).item() == pytest.approx(expect, rel=1e-12)
    assert effective_rank(x[0]).ndim == 0


def test_stable_rank_closed_form():
    x = torch.zeros(4, 3, dtype=F64)
    x[0, 0], x[1, 1] = 3.0, 1.0
    assert stable_rank(x).item() == pytest.approx(10 / 9, rel=1e-12)


def test_center_removes_the_shared_token():
    row = torch.randn(1, 5, dtype=F64)
    same = row.expand(6, 5).clone()
    assert effective_rank(same).item() == pytest.approx(1.0, rel=1e-12)
    # centring leaves only rounding noise, which must not count as rank (float32 and float64)
    assert effective_rank(same, center=True).item() == 0.0
    assert effective_rank(same.float(), center=True).item() == 0.0
    # center=True equals the plain effective rank of the explicitly centred matrix
    x = torch.randn(2, 6, 5, dtype=F64) + 4.0
    torch.testing.assert_close(effective_rank(x, center=True), effective_rank(x - x.mean(1, keepdim=True)))
    assert (effective_rank(x, center=True) > effective_rank(x)).all()


def test_rank_zero_matrix_gives_zero():
    z = torch.zeros(2, 4, 3)
    for fn in (effective_rank, stable_rank, rank_collapse_residual):
        out = fn(z)
        assert out.shape == (2,) and torch.equal(out, torch.zeros(2))
    assert effective_rank(torch.zeros(4, 3), center=True).item() == 0.0


def _composite(m: np.ndarray) -> float:
    return math.sqrt(np.abs(m).sum(axis=0).max() * np.abs(m).sum(axis=1).max())


def test_rank_collapse_residual_matches_definition():
    x = torch.randn(3, 6, 4, dtype=F64)
    for b in range(3):
        m = x[b].numpy()
        expect = _composite(m - m.mean(axis=0, keepdims=True)) / _composite(m)
        assert rank_collapse_residual(x)[b].item() == pytest.approx(expect, rel=1e-12)
    assert rank_collapse_residual(x[0]).ndim == 0


def test_rank_collapse_residual_zero_for_identical_rows():
    row = torch.randn(1, 1, 5, dtype=F64)
    assert rank_collapse_residual(row.expand(2, 7, 5)).abs().max().item() < 1e-15


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(n=st.integers(1, 6), c=st.integers(1, 6), scale=st.floats(1e-3, 1e3), seed=st.integers(0, 2**16))
def test_property_rank_bounds_and_scale_invariance(n, c, scale, seed):
    x = torch.randn(2, n, c, dtype=F64, generator=torch.Generator().manual_seed(seed))
    er, sr = effective_rank(x), stable_rank(x)
    hard = torch.linalg.matrix_rank(x).to(F64)
    assert (er >= 1 - 1e-9).all() and (er <= hard + 1e-9).all()
    assert (sr >= 1 - 1e-9).all() and (sr <= hard + 1e-9).all()
    torch.testing.assert_close(effective_rank(scale * x), er)
    torch.testing.assert_close(stable_rank(scale * x), sr)
    torch.testing.assert_close(rank_collapse_residual(scale * x), rank_collapse_residual(x))


def test_rank_shape_errors():
    with pytest.raises(FreqkitError, match=r"\(B, N, C\)"):
        effective_rank(torch.zeros(5))
    with pytest.raises(FreqkitError, match=r"\(B, N, C\)"):
        stable_rank(torch.zeros(1, 2, 3, 4))


@pytest.mark.parametrize("scale", [0.001, 0.01, 0.05, 3.0])  # near-uniform maps were 0.6 % off
def test_effective_rank_agrees_between_float32_and_float64_on_attention_maps(scale):
    """Softmax attention maps have many small singular values that float32 still resolves; the
    float32 input and its float64 copy must give the same effective rank (1e-4 relative)."""
    g = torch.Generator().manual_seed(7)
    attn64 = (scale * torch.randn(6, 197, 197, dtype=F64, generator=g)).softmax(-1)
    attn32 = attn64.float()
    er32, er64 = effective_rank(attn32), effective_rank(attn32.double())
    assert er32.dtype == torch.float32
    torch.testing.assert_close(er32.double(), er64, rtol=1e-4, atol=0)
    torch.testing.assert_close(er32.double(), effective_rank(attn64), rtol=1e-4, atol=0)


def _conditioned(b: int, n: int, c: int, cond: float, seed: int) -> torch.Tensor:
    """(b, n, c) float64 matrices with singular values spaced log-uniformly from 1 down to 1 / cond (QR factors)."""
    g = torch.Generator().manual_seed(seed)
    k = min(n, c)
    u, _ = torch.linalg.qr(torch.randn(b, n, k, generator=g, dtype=F64))
    v, _ = torch.linalg.qr(torch.randn(b, c, k, generator=g, dtype=F64))
    s = torch.logspace(0, -math.log10(cond), k, dtype=F64)
    scale = torch.rand(b, 1, 1, generator=g, dtype=F64) * 1e3
    return scale * (u * s) @ v.mT


def _gram_bound(s: torch.Tensor, shape) -> torch.Tensor:
    """Per-value error allowed against the SVD's s (..., k): the Gram path's delta / (2 s_i), delta = max(N, C) eps
    ||X||_F^2 (singular_values' docstring), plus max(N, C) eps s_1, what any backward-stable method may differ by."""
    eps_n = max(shape) * torch.finfo(F64).eps
    return 2 * eps_n * (s**2).sum(-1, keepdim=True) / (2 * s.clamp_min(1e-300)) + 2 * eps_n * s[..., :1]


@pytest.mark.parametrize("shape", [(196, 192), (192, 196), (197, 197), (9, 40), (40, 9)])
@pytest.mark.parametrize("cond", [3.0, 1e3, 1e7, 1e14])
def test_singular_values_match_float64_svd_in_both_orientations(shape, cond):
    # well-conditioned matrices take the Gram eigenvalues, ill-conditioned ones the SVD: both must be the SVD's values
    x = _conditioned(6, *shape, cond=cond, seed=int(cond) % 1000 + shape[0])
    got = singular_values(x)
    want = torch.linalg.svdvals(x)
    assert got.shape == want.shape
    assert ((got - want).abs() <= _gram_bound(want, shape)).all()
    er_fast = effective_rank(x)
    s = torch.where(want > want[..., :1] * max(shape) * torch.finfo(F64).eps * math.sqrt(min(shape)), want, 0)
    p = s / s.sum(-1, keepdim=True)
    er_ref = torch.exp(-torch.special.xlogy(p, p).sum(-1))
    torch.testing.assert_close(er_fast, er_ref, rtol=1e-9, atol=0)


def test_singular_values_of_softmax_attention_and_rank_deficient_maps():
    g = torch.Generator().manual_seed(3)
    attn = torch.softmax(0.02 * torch.randn(12, 50, 50, generator=g, dtype=F64), dim=-1)  # near rank 1
    low = torch.randn(12, 60, 3, generator=g, dtype=F64) @ torch.randn(12, 3, 20, generator=g, dtype=F64)  # rank 3
    for x in (attn, low, low.mT):
        want = torch.linalg.svdvals(x)
        assert ((singular_values(x) - want).abs() <= _gram_bound(want, x.shape[-2:])).all()
        s = torch.linalg.svdvals(x)
        tol = torch.linalg.vector_norm(x, dim=(-2, -1))[:, None] * max(x.shape[-2:]) * torch.finfo(F64).eps
        s = torch.where(s > tol, s, 0)
        p = s / s.sum(-1, keepdim=True)
        # the Gram path is taken only where its first-order erank error bound is below 1e-8 relative
        torch.testing.assert_close(effective_rank(x), torch.exp(-torch.special.xlogy(p, p).sum(-1)), rtol=1e-8, atol=0)


def test_singular_values_split_over_threads_equal_one_call():
    x = _conditioned(40, 30, 20, cond=50.0, seed=5)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = singular_values(x)
        torch.set_num_threads(3)
        split = singular_values(x)
        assert torch.get_num_threads() == 3  # restored after the pool
    finally:
        torch.set_num_threads(threads)
    torch.testing.assert_close(split, one, rtol=1e-14, atol=0)


def test_map_threads_keeps_order_runs_each_call_at_one_thread_and_restores_the_count():
    from freqkit.spectral._common import map_threads

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        seen = map_threads(lambda i: (i, torch.get_num_threads()), range(5))
        assert seen == [(i, 1) for i in range(5)]
        assert torch.get_num_threads() == 2
        with pytest.raises(ZeroDivisionError):
            map_threads(lambda i: 1 // i, [1, 0, 2])
        assert torch.get_num_threads() == 2  # restored after a failing call too
        torch.set_num_threads(1)
        assert map_threads(lambda i: threading.get_ident(), range(3)) == [threading.get_ident()] * 3  # in order, here
    finally:
        torch.set_num_threads(before)
