"""Graph-spectral simulation: grid Laplacian, window mixers, stencils, responses (SPANetV2's graph-spectral analysis)."""

from __future__ import annotations

import math

import pytest
import torch

from freqkit.errors import FreqkitError
from freqkit.spectral import graph as g


def test_open_grid_laplacian_by_hand():
    # 2 x 3 grid, nodes 0 1 2 / 3 4 5: degrees 2 3 2 / 2 3 2
    adj = g.grid_adjacency(2, 3)
    want = torch.zeros(6, 6, dtype=torch.float64)
    for a, b in [(0, 1), (1, 2), (3, 4), (4, 5), (0, 3), (1, 4), (2, 5)]:
        want[a, b] = want[b, a] = 1
    assert torch.equal(adj, want)
    lap = g.grid_laplacian(2, 3)
    assert lap[0, 1].item() == pytest.approx(-1 / math.sqrt(2 * 3))
    assert lap[1, 4].item() == pytest.approx(-1 / 3)
    assert torch.allclose(lap.diagonal(), torch.ones(6, dtype=torch.float64))
    freqs, basis = g.graph_fourier_basis(lap)
    assert freqs[0].abs() < 1e-12 and freqs[-1] <= 2 + 1e-12
    assert torch.allclose(basis.T @ basis, torch.eye(6, dtype=torch.float64), atol=1e-12)


def test_window_average_rows_and_extremes():
    t1 = g.window_average(4, 5, 1)
    assert torch.equal(t1, torch.eye(20, dtype=torch.float64))
    t3 = g.window_average(4, 5, 3)
    assert torch.allclose(t3.sum(1), torch.ones(20, dtype=torch.float64))
    assert t3[0].count_nonzero() == 4 and t3[6].count_nonzero() == 9  # corner 2x2, interior 3x3
    full = g.window_average(4, 5, None)
    assert torch.allclose(full, torch.full((20, 20), 1 / 20, dtype=torch.float64))
    assert torch.allclose(g.window_average(4, 5, 9), full)  # a window covering the grid is global


def _high_band(h, w, k, periodic=False):
    freqs, basis = g.graph_fourier_basis(g.grid_laplacian(h, w, periodic))
    f, r, _ = g.eigenspace_response(g.window_average(h, w, k, periodic), freqs, basis)
    return r[f > 1.0].abs().mean().item()


@pytest.mark.parametrize("grid", [(10, 10, False), (8, 12, False), (10, 10, True)])
def test_smaller_windows_pass_more_high_graph_frequencies(grid):
    h, w, periodic = grid
    band = [_high_band(h, w, k, periodic) for k in g.default_windows(h, w)]
    assert band[0] == pytest.approx(1.0)  # k = 1 is the identity: all-pass
    assert all(a > b for a, b in zip(band, band[1:])), band
    # the full grid passes (almost) no high frequency: exactly none on the torus; on the open grid
    # only what the non-constant DC eigenvector leaks (see test_full_window_is_global_averaging)
    assert band[-1] < (1e-12 if periodic else 1e-3)


def test_full_window_is_global_averaging():
    # torus (regular graph): the DC eigenvector is constant, so the global average passes DC only
    freqs, basis = g.graph_fourier_basis(g.grid_laplacian(6, 8, periodic=True))
    r = g.graph_response(g.window_average(6, 8, None, periodic=True), basis)
    assert r[0].item() == pytest.approx(1.0, abs=1e-12)
    assert r[1:].abs().max() < 1e-12
    # open grid: DC eigenvector ~ sqrt(degree), so r_0 = (sum sqrt d)^2 / (N sum d), the rest sums to 1 - r_0
    deg = g.grid_adjacency(6, 8).sum(1)
    freqs, basis = g.graph_fourier_basis(g.grid_laplacian(6, 8))
    r = g.graph_response(g.window_average(6, 8, None), basis)
    r0 = (deg.sqrt().sum() ** 2 / (48 * deg.sum())).item()
    assert r[0].item() == pytest.approx(r0, abs=1e-12)
    assert r.sum().item() == pytest.approx(1.0, abs=1e-12)


def test_negative_tap_stencils_are_high_pass_and_averages_low_pass():
    freqs, basis = g.graph_fourier_basis(g.grid_laplacian(10, 10))

    def bands(stencil):
        f, r, _ = g.eigenspace_response(g.stencil_matrix(stencil, 10, 10), freqs, basis)
        return r[f < 0.5].mean().item(), r[f > 1.5].mean().item()

    for s in (g.laplacian_stencil(), g.sharpen_stencil()):
        low, high = bands(s)
        assert high > 2 * low and high > 1
    for s in (g.box_stencil(3), g.gaussian_stencil(5)):
        low, high = bands(s)
        assert low > 0.3 and abs(high) < 0.2


def test_stencil_matrix_is_cross_correlation_with_zero_padding():
    s = torch.arange(9, dtype=torch.float64).reshape(3, 3)
    x = torch.randn(5, 6, dtype=torch.float64)
    want = torch.nn.functional.conv2d(x[None, None], s[None, None], padding=1)[0, 0]  # conv2d is cross-correlation
    assert torch.allclose((g.stencil_matrix(s, 5, 6) @ x.reshape(-1)).reshape(5, 6), want)
    wrapped = torch.nn.functional.conv2d(torch.nn.functional.pad(x[None, None], (1, 1, 1, 1), mode="circular"), s[None, None])[
        0, 0
    ]
    assert torch.allclose((g.stencil_matrix(s, 5, 6, periodic=True) @ x.reshape(-1)).reshape(5, 6), wrapped)


@pytest.mark.parametrize("hw", [(6, 6), (5, 8)])
def test_torus_graph_spectrum_agrees_with_the_2d_dft(hw):
    """On the torus, where they coincide: (1) L's eigenvalues are 1 - (cos wy + cos wx) / 2;
    (2) a circulant filter's eigenvalues are its stencil's 2-D DFT; (3) its mean response over each
    eigenspace of L is the mean DFT value over the modes of that graph frequency; (4) for a
    polynomial in L (the Laplacian stencil = 4 L) U^T T U is diagonal and equals the DFT mode by mode."""
    h, w = hw
    lap = g.grid_laplacian(h, w, periodic=True)
    freqs, basis = g.graph_fourier_basis(lap)
    lam = g.torus_frequencies(h, w)
    assert torch.allclose(freqs, lam.flatten().sort().values, atol=1e-12)
    for stencil in (g.box_stencil(3), g.gaussian_stencil(3, 0.8), g.laplacian_stencil(), g.sharpen_stencil(0.5)):
        t = g.stencil_matrix(stencil, h, w, periodic=True)
        dft = g.stencil_dft(stencil, h, w)
        assert dft.imag.abs().max() < 1e-12  # symmetric stencils: real response
        assert torch.allclose(torch.linalg.eigvalsh(t), dft.real.flatten().sort().values, atol=1e-10)
        f, r, dims = g.eigenspace_response(t, freqs, basis)
        for fi, ri, di in zip(f, r, dims):
            modes = (lam - fi).abs() < 1e-8
            assert int(modes.sum()) == int(di)
            assert ri.item() == pytest.approx(dft.real[modes].mean().item(), abs=1e-10)
    t = g.stencil_matrix(g.laplacian_stencil(), h, w, periodic=True)
    spectral = basis.T @ t @ basis
    assert torch.allclose(spectral, torch.diag(4 * freqs), atol=1e-10)


def test_window_attention_is_softmax_restricted_to_the_window():
    torch.manual_seed(0)
    tokens = torch.randn(20, 8, dtype=torch.float64)
    att = g.window_attention(tokens, (4, 5), 3)
    inside = g.window_adjacency(4, 5, 3) > 0
    assert torch.allclose(att.sum(1), torch.ones(20, dtype=torch.float64))
    assert (att[~inside] == 0).all()
    logits = tokens[6] @ tokens.T / math.sqrt(8)
    want = torch.softmax(logits[inside[6]], 0)
    assert torch.allclose(att[6][inside[6]], want)
    # equal scores: attention over the full grid is the global average
    same = g.window_attention(torch.ones(20, 8, dtype=torch.float64), (4, 5), None)
    assert torch.allclose(same, g.window_average(4, 5, None))


def test_radial_curve_weights_and_bins():
    f = torch.tensor([0.0, 0.1, 1.0, 1.9], dtype=torch.float64)
    r = torch.tensor([1.0, 3.0, 5.0, 7.0], dtype=torch.float64)
    centres, means = g.radial_curve(f, r, bins=2, weights=torch.tensor([1.0, 3.0, 1.0, 1.0]))
    assert torch.allclose(centres, torch.tensor([0.5, 1.5], dtype=torch.float64))
    assert torch.allclose(means, torch.tensor([2.5, 6.0], dtype=torch.float64))


def test_bad_inputs_raise():
    with pytest.raises(FreqkitError, match="odd"):
        g.window_adjacency(4, 4, 4)
    with pytest.raises(FreqkitError, match="odd sides"):
        g.stencil_matrix(torch.ones(2, 2), 4, 4)
    with pytest.raises(FreqkitError, match="torus"):
        g.stencil_matrix(torch.ones(5, 5), 4, 4, periodic=True)
    with pytest.raises(FreqkitError, match="match"):
        g.graph_response(torch.eye(4), torch.eye(5))
    with pytest.raises(FreqkitError, match="grid"):
        g.window_attention(torch.randn(10, 4), (3, 3), 3)
