"""Token operators as matrices: circulant stencils, AttInv's layer operator, stacked local responses, and full_plane."""

import math

import torch

from freqkit.spectral import circulant, full_plane, layer_kernel, local_response, periodic_gaussian, stack_response


def test_full_plane_matches_irfft2_for_odd_and_even_widths():
    g = torch.Generator().manual_seed(3)
    for h, w in ((5, 6), (4, 7), (6, 1)):
        x = torch.randn(2, 3, h, w, generator=g, dtype=torch.float64)
        half = torch.randn(3, h, w // 2 + 1, generator=g, dtype=torch.float64)
        want = torch.fft.irfft2(torch.fft.rfft2(x) * half, s=(h, w))
        got = torch.fft.ifft2(torch.fft.fft2(x) * full_plane(half, w)).real
        torch.testing.assert_close(got, want)


def test_stacked_response_of_circulant_kernels_is_the_product():
    grid = (6, 8)
    g = torch.Generator().manual_seed(4)
    s1 = torch.rand(grid, generator=g, dtype=torch.float64)
    s2 = torch.zeros(grid, dtype=torch.float64)
    s2[0, 0], s2[0, 1], s2[1, 0], s2[0, -1], s2[-1, 0] = 1.0, -0.25, -0.25, -0.25, -0.25  # Laplacian-like stencil
    k1 = layer_kernel(circulant(s1 / s1.sum()), 1.3, 0.4)
    k2 = circulant(s2)
    for q in (0, 13, 47):
        stacked = stack_response(k1, k2, grid, q)
        r1 = local_response(k1[None, None, q : q + 1], grid, 0, queries="all")[0, 0, 0]
        r2 = local_response(k2[None, None, q : q + 1], grid, 0, queries="all")[0, 0, 0]
        torch.testing.assert_close(stacked, r1 * r2)
    # the single response of the Laplacian stencil is its closed form |1 - 0.5 cos(wy) - 0.5 cos(wx)|
    wy = 2 * math.pi * torch.fft.fftshift(torch.fft.fftfreq(grid[0], dtype=torch.float64))
    wx = 2 * math.pi * torch.fft.fftshift(torch.fft.fftfreq(grid[1], dtype=torch.float64))
    closed = (1 - 0.5 * torch.cos(wy)[:, None] - 0.5 * torch.cos(wx)[None, :]).abs()
    r2 = local_response(k2[None, None, :1], grid, 0, queries="all")[0, 0, 0]
    torch.testing.assert_close(r2, closed)


def test_circulant_is_periodic_convolution_and_periodic_gaussian_is_normalized():
    g = torch.Generator().manual_seed(5)
    stencil = torch.randn(4, 5, generator=g, dtype=torch.float64)
    x = torch.randn(4, 5, generator=g, dtype=torch.float64)
    # (K x)[q] = sum_k stencil[(k - q) mod grid] x[k]: the correlation of x with the stencil, via the DFT
    want = torch.fft.ifft2(torch.fft.fft2(x) * torch.fft.fft2(stencil).conj()).real.reshape(-1)
    torch.testing.assert_close(circulant(stencil) @ x.reshape(-1), want)
    gauss = periodic_gaussian((6, 7), 1.3)
    assert math.isclose(float(gauss.sum()), 1.0, rel_tol=1e-12)
    # symmetric under dy -> -dy, dx -> -dx on the torus, largest at the origin
    torch.testing.assert_close(gauss, torch.roll(torch.flip(gauss, (0, 1)), (1, 1), (0, 1)))
    assert int(gauss.argmax()) == 0
