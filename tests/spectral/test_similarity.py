"""Token cosine similarity (FDAM supplementary, eq. 36) and cross-layer similarity against brute-force loops."""

import numpy as np
import pytest
import torch

import freqkit.spectral.similarity as sim_mod
from freqkit.errors import FreqkitError
from freqkit.spectral import cross_layer_similarity, token_cosine_similarity

F64 = torch.float64


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    return 0.0 if na == 0 or nb == 0 else float(a @ b / (na * nb))


@pytest.mark.parametrize("absolute", [True, False])
def test_token_cosine_similarity_matches_eq36(absolute):
    x = torch.randn(2, 7, 4, dtype=F64)
    for b in range(2):
        m = x[b].numpy()
        n = m.shape[0]
        vals = [_cos(m[i], m[j]) for i in range(n) for j in range(i + 1, n)]
        vals = np.abs(vals) if absolute else np.array(vals)
        expect = 2.0 / (n * (n - 1)) * vals.sum()
        assert token_cosine_similarity(x, absolute=absolute)[b].item() == pytest.approx(expect, rel=1e-12)


def test_identical_and_orthogonal_tokens():
    tok = torch.randn(1, 1, 5, dtype=F64)
    same = tok.expand(3, 6, 5)
    torch.testing.assert_close(token_cosine_similarity(same), torch.ones(3, dtype=F64))
    flipped = torch.cat([tok, -tok], dim=1)
    assert token_cosine_similarity(flipped).item() == pytest.approx(1.0)
    assert token_cosine_similarity(flipped, absolute=False).item() == pytest.approx(-1.0)
    ortho = torch.eye(5, dtype=F64)[None]
    assert token_cosine_similarity(ortho).item() == 0.0


def test_single_and_zero_tokens():
    assert token_cosine_similarity(torch.randn(2, 1, 4)).tolist() == [0.0, 0.0]
    a = torch.randn(4, dtype=F64)
    x = torch.stack([a, torch.zeros(4, dtype=F64), a])[None]
    # pairs (a, 0), (a, a), (0, a): cosines 0, 1, 0
    assert token_cosine_similarity(x).item() == pytest.approx(1 / 3, rel=1e-12)
    assert token_cosine_similarity(torch.zeros(2, 3, 4)).tolist() == [0.0, 0.0]
    assert token_cosine_similarity(x[0]).ndim == 0


@pytest.mark.parametrize("absolute", [True, False])
def test_gram_blocks_give_the_same_result(monkeypatch, absolute):
    x = torch.randn(2, 9, 3, dtype=F64)
    whole = token_cosine_similarity(x, absolute)
    monkeypatch.setattr(sim_mod, "_GRAM_BLOCK_ELEMS", 2 * 9 * 2)  # blocks of 2 rows
    torch.testing.assert_close(token_cosine_similarity(x, absolute), whole)


def test_cross_layer_similarity_matches_bruteforce():
    layers = [torch.randn(2, 5, 3, dtype=F64) for _ in range(4)]
    got = cross_layer_similarity(layers)
    assert got.shape == (4, 4)
    for l in range(4):
        for m in range(4):
            a, b = layers[l].reshape(-1, 3).numpy(), layers[m].reshape(-1, 3).numpy()
            expect = np.mean([_cos(a[i], b[i]) for i in range(len(a))])
            assert got[l, m].item() == pytest.approx(expect, rel=1e-12, abs=1e-15)
    torch.testing.assert_close(cross_layer_similarity(torch.stack(layers)), got)


def test_cross_layer_similarity_diagonal_symmetry_and_sign():
    base = torch.randn(3, 6, 8)
    layers = [base, 2 * base, -base, torch.randn(3, 6, 8)]
    got = cross_layer_similarity(layers)
    assert torch.equal(got.diagonal(), torch.ones(4))
    assert torch.equal(got, got.T)
    assert got[0, 1].item() == pytest.approx(1.0, abs=1e-6)
    assert got[0, 2].item() == pytest.approx(-1.0, abs=1e-6)
    with_zero = base.clone()
    with_zero[0, 0] = 0
    diag = cross_layer_similarity([with_zero, base]).diagonal()
    assert diag.tolist() == pytest.approx([1 - 1 / 18, 1.0])


def test_cross_layer_similarity_errors():
    with pytest.raises(FreqkitError, match="same token count"):
        cross_layer_similarity([torch.zeros(1, 4, 3), torch.zeros(1, 5, 3)])
    with pytest.raises(FreqkitError, match="no layers"):
        cross_layer_similarity([])
    with pytest.raises(FreqkitError, match=r"\(L, B, N, C\)"):
        cross_layer_similarity(torch.zeros(2, 3, 4))
