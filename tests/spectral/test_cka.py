"""Linear CKA against its closed formula, the unbiased HSIC against its U-statistic definition, and
the mini-batch CKA's invariances."""

from itertools import permutations

import numpy as np
import pytest
import torch

from freqkit.errors import FreqkitError
from freqkit.spectral import cka_from_hsic, hsic_matrix, linear_cka, minibatch_cka, unbiased_hsic

F64 = torch.float64


def _orthogonal(c: int, seed: int) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(c, c, dtype=F64, generator=torch.Generator().manual_seed(seed)))
    return q


def _cka_numpy(x: np.ndarray, y: np.ndarray) -> float:
    """Kornblith et al. 2019 via centred Gram matrices: HSIC(K, L) = tr(K H L H) / (n-1)^2, CKA = HSIC(K,L) / sqrt(HSIC(K,K) HSIC(L,L))."""
    n = x.shape[0]
    h = np.eye(n) - np.ones((n, n)) / n
    k, l = x @ x.T, y @ y.T

    def hsic(a, b):
        return np.trace(a @ h @ b @ h) / (n - 1) ** 2

    return hsic(k, l) / np.sqrt(hsic(k, k) * hsic(l, l))


def test_linear_cka_matches_gram_formula_in_float64():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(20, 7, dtype=F64, generator=g)
    y = x[:, :5] @ torch.randn(5, 9, dtype=F64, generator=g) + 0.5 * torch.randn(20, 9, dtype=F64, generator=g)
    got = linear_cka(x, y).item()
    assert got == pytest.approx(_cka_numpy(x.numpy(), y.numpy()), rel=1e-12)
    assert 0.0 < got < 1.0
    assert linear_cka(x, x).item() == pytest.approx(1.0, rel=1e-12)


def test_linear_cka_invariances():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(30, 6, dtype=F64, generator=g)
    y = torch.randn(30, 4, dtype=F64, generator=g) + x[:, :4]
    base = linear_cka(x, y).item()
    assert linear_cka(x @ _orthogonal(6, 2), y).item() == pytest.approx(base, rel=1e-12)
    assert linear_cka(x, 7.5 * y @ _orthogonal(4, 3)).item() == pytest.approx(base, rel=1e-12)
    assert linear_cka(x + 3.0, y).item() == pytest.approx(base, rel=1e-12)  # centring removes offsets
    assert linear_cka(y, x).item() == pytest.approx(base, rel=1e-12)
    assert linear_cka(torch.ones(5, 3), torch.randn(5, 2)).item() == 0.0
    assert linear_cka(x.float(), y.float()).dtype == torch.float32


def _hsic_u_statistic(k: np.ndarray, l: np.ndarray) -> float:
    """Song et al. 2012, the U-statistic over distinct index tuples, written out with loops."""
    n = k.shape[0]
    t1 = sum(k[i, j] * l[i, j] for i, j in permutations(range(n), 2)) / (n * (n - 1))
    t2 = sum(k[i, j] * l[q, r] for i, j, q, r in permutations(range(n), 4)) / (n * (n - 1) * (n - 2) * (n - 3))
    t3 = sum(k[i, j] * l[i, q] for i, j, q in permutations(range(n), 3)) / (n * (n - 1) * (n - 2))
    return t1 + t2 - 2 * t3


def test_unbiased_hsic_equals_u_statistic():
    g = torch.Generator().manual_seed(2)
    x, y = torch.randn(6, 3, dtype=F64, generator=g), torch.randn(6, 5, dtype=F64, generator=g)
    k, l = x @ x.T, y @ y.T
    assert unbiased_hsic(k, l).item() == pytest.approx(_hsic_u_statistic(k.numpy(), l.numpy()), rel=1e-10)
    # batched, and hsic_matrix gives the same entries for every pair of representations
    z = torch.randn(2, 6, 4, dtype=F64, generator=g)
    feats = [torch.stack([x, x + 1]), torch.stack([y, 2 * y]), z]
    mat = hsic_matrix(feats)
    assert mat.shape == (2, 3, 3)
    for gi in range(2):
        for a in range(3):
            for b in range(3):
                fa, fb = feats[a][gi], feats[b][gi]
                expect = _hsic_u_statistic((fa @ fa.T).numpy(), (fb @ fb.T).numpy())
                assert mat[gi, a, b].item() == pytest.approx(expect, rel=1e-9, abs=1e-12 * abs(mat[gi, a, a].item()))


def test_minibatch_cka_invariances_and_limits():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(5, 16, 8, dtype=F64, generator=g)
    y = torch.randn(5, 16, 6, dtype=F64, generator=g) + x[..., :6]
    noise = torch.randn(5, 16, 8, dtype=F64, generator=g)
    cka = minibatch_cka([x, y, x @ _orthogonal(8, 4) * 3.0, noise])
    assert cka.shape == (4, 4)
    torch.testing.assert_close(torch.diagonal(cka), torch.ones(4, dtype=F64))
    torch.testing.assert_close(cka, cka.T)
    assert cka[0, 2].item() == pytest.approx(1.0, rel=1e-12)
    assert cka[0, 1].item() == pytest.approx(cka[2, 1].item(), rel=1e-12)
    assert cka[0, 1].item() > 3 * abs(cka[0, 3].item())  # related features align more than independent noise
    # the estimate is the ratio of HSIC sums: splitting the mini-batches into two streams changes nothing
    h = hsic_matrix([x[:2], y[:2]]).sum(0) + hsic_matrix([x[2:], y[2:]]).sum(0)
    torch.testing.assert_close(cka_from_hsic(h), minibatch_cka([x, y]))


def test_cka_bad_input():
    with pytest.raises(FreqkitError, match="same samples"):
        linear_cka(torch.randn(4, 2), torch.randn(5, 2))
    with pytest.raises(FreqkitError, match="at least 4 samples"):
        hsic_matrix([torch.randn(2, 3, 5)])
    with pytest.raises(FreqkitError, match="same samples"):
        hsic_matrix([torch.randn(2, 6, 5), torch.randn(2, 7, 5)])
