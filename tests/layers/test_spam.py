"""SPAM (SPANet v1): masks, the three exact paths, released-mask loading, dtypes and errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from closeness import assert_scaled_close
from conformance import find_fixture
from torch import nn

from freqkit.errors import FreqkitError
from freqkit.layers import SPAM
from freqkit.layers.spam import signed_frequencies, spf_mask


def _randomize(module: nn.Module) -> nn.Module:
    """Random weights and biases of order 1, so that every path's contribution shows."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    return module


def _spf_bruteforce(x: np.ndarray, radius: float, lam: float) -> np.ndarray:
    """SPF from the spec with explicit DFT matrices: real(F_H^-1 (M * (F_H x F_W)) F_W^-1), x (..., H, W)."""
    h, w = x.shape[-2:]
    fh = np.exp(-2j * np.pi * np.outer(np.arange(h), np.arange(h)) / h) / np.sqrt(h)
    fw = np.exp(-2j * np.pi * np.outer(np.arange(w), np.arange(w)) / w) / np.sqrt(w)
    ky = np.array([k if k <= (h - 1) // 2 else k - h for k in range(h)], dtype=float)
    kx = np.array([k if k <= (w - 1) // 2 else k - w for k in range(w)], dtype=float)
    dist = np.sqrt(ky[:, None] ** 2 + kx[None, :] ** 2)
    mask = np.where(dist < radius, lam, np.where(dist > radius, 1 - lam, 1 / 3))
    spec = fh @ x @ fw.T
    return np.real(fh.conj().T @ (mask * spec) @ fw.conj())


def test_signed_frequencies_are_fftfreq_times_n():
    for n in (1, 2, 5, 8):
        want = torch.fft.fftfreq(n) * n
        assert torch.equal(signed_frequencies(n).double(), want.double())


def test_mask_values_on_a_small_grid():
    # 6 x 6, r = 1: DC inside (lambda), the four |k| = 1 bins on the ring (1/3), the rest 1 - lambda
    m = spf_mask((6, 6), 1, 0.8)
    ring = {(0, 1), (1, 0), (0, 5), (5, 0)}
    for i in range(6):
        for j in range(6):
            want = 0.8 if (i, j) == (0, 0) else (1 / 3 if (i, j) in ring else 1 - 0.8)
            assert m[i, j].item() == pytest.approx(want, abs=1e-7)


@pytest.mark.parametrize("name,radius", [("spanet_spam_c64_56x56_r2", 2), ("spanet_spam_c96_14x14_r1", 1)])
def test_shifted_mask_equals_the_released_mask(name, radius):
    from safetensors import safe_open

    path = find_fixture(f"{name}.safetensors")
    if path is None:
        pytest.skip(f"conformance fixture {name}.safetensors is neither shipped nor in FREQKIT_CONFORMANCE_DIR")
    with safe_open(str(path), "pt") as f:
        for i, lam in enumerate((0.7, 0.8, 0.9)):
            stored = f.get_tensor(f"state.sps.{i}.filter")[0]
            assert torch.allclose(spf_mask(stored.shape, radius, lam, shifted=True), stored, atol=1e-6)


@pytest.mark.parametrize("size", [(5, 7), (6, 4), (3, 3), (2, 5)])
def test_mask_is_hermitian_so_the_half_spectrum_path_is_exact(size):
    h, w = size
    m = spf_mask(size, 2, 0.7).double()
    # M(k) == M(-k): the index of -k is (-i mod H, -j mod W)
    assert torch.equal(m, m[(-torch.arange(h)) % h][:, (-torch.arange(w)) % w])
    x = torch.randn(3, h, w, dtype=torch.float64)
    full = torch.fft.ifft2(torch.fft.fft2(x, norm="ortho") * m, norm="ortho")
    half = torch.fft.irfft2(torch.fft.rfft2(x, norm="ortho") * m[:, : w // 2 + 1], s=(h, w), norm="ortho")
    assert full.imag.abs().max() < 1e-12
    assert torch.allclose(full.real, half, atol=1e-12)


@pytest.mark.parametrize("size,radius", [((6, 9), 2.0), ((7, 7), 1.0), ((4, 3), 2.0), ((5, 8), 0.0), ((9, 6), 3.0)])
def test_reference_spf_equals_the_bruteforce_dft(size, radius):
    # make SPAM expose SPF: identity proj_in / convs / proj_out, pws_i = chunk i into its own channels,
    # zero biases; then y = x * SPF_chunk(x)
    dim = 6
    m = SPAM(dim, radius=radius, fused=False).eval()
    with torch.no_grad():
        for p in m.parameters():
            p.zero_()
        m.proj_in.weight[:, :, 0, 0] = torch.eye(dim)
        m.proj_out.weight[:, :, 0, 0] = torch.eye(dim)
        m.conv[0].weight[:, 0, 0, 3] = 1
        m.conv[1].weight[:, 0, 3, 0] = 1
        for i, pw in enumerate(m.pws):
            pw.weight[2 * i : 2 * i + 2, :, 0, 0] = torch.eye(2)
    x = torch.rand(1, dim, *size, dtype=torch.float32) + 0.5
    with torch.no_grad():
        spf = (m(x) / x)[0].numpy()
    for i, lam in enumerate((0.7, 0.8, 0.9)):
        want = _spf_bruteforce(x[0, 2 * i : 2 * i + 2].double().numpy(), radius, lam)
        np.testing.assert_allclose(spf[2 * i : 2 * i + 2], want, atol=2e-5)


@pytest.mark.parametrize("transform", ["bins", "rfft"])
@pytest.mark.parametrize(
    "size,radius", [((14, 14), 2), ((7, 7), 1), ((9, 12), 2), ((5, 3), 3), ((2, 2), 1), ((1, 6), 2), ((8, 5), 0.5)]
)
def test_fast_paths_equal_the_reference_path(transform, size, radius):
    ref = _randomize(SPAM(12, radius=radius, fused=False)).eval()
    fast = SPAM(12, radius=radius, transform=transform).eval()
    fast.load_state_dict(ref.state_dict())
    x = torch.randn(2, 12, *size)
    with torch.no_grad():
        want, got = ref(x), fast(x)
    assert torch.allclose(got, want, atol=1e-5 * max(1.0, want.abs().max().item()))


def test_bins_path_gradients_equal_the_reference_path():
    ref = _randomize(SPAM(9, radius=2, fused=False))
    fast = SPAM(9, radius=2)
    fast.load_state_dict(ref.state_dict())
    x = torch.randn(2, 9, 10, 7)
    xr, xf = x.clone().requires_grad_(), x.clone().requires_grad_()
    (ref(xr) ** 2).sum().backward()
    (fast(xf) ** 2).sum().backward()
    # gradients reach ~2e3: float32 rounding of the two summation orders differs by ~1e-7 of that scale
    assert_scaled_close(xf.grad, xr.grad, rel=2e-5, msg="input")
    for (name, pr), pf in zip(ref.named_parameters(), fast.parameters()):
        assert_scaled_close(pf.grad, pr.grad, rel=2e-5, msg=name)


def test_chunks_follow_torch_chunk_and_masks_are_not_state():
    m = SPAM(64)
    assert m.chunks == (22, 22, 20)
    assert [p.weight.shape[1] for p in m.pws] == [22, 22, 20]
    assert not any("sps" in k for k in m.state_dict())


def test_released_masks_load_checked_and_dropped():
    src = _randomize(SPAM(16, radius=2))
    sd = dict(src.state_dict())
    for i in range(3):
        sd[f"sps.{i}.filter"] = src.mask((8, 8), i, shifted=True)[None]
    dst = SPAM(16, radius=2)
    dst.load_state_dict(sd, strict=True)
    assert all(torch.equal(a, b) for a, b in zip(src.state_dict().values(), dst.state_dict().values()))
    with pytest.raises(FreqkitError, match="radius"):
        SPAM(16, radius=1).load_state_dict(sd)


def test_constants_follow_the_device_and_dtype_moves():
    m = _randomize(SPAM(9)).eval()
    x = torch.randn(1, 9, 6, 6, dtype=torch.float64)
    with torch.no_grad():
        m(x.float())
        m.double()
        want = SPAM(9, fused=False).double().eval()
        want.load_state_dict(m.state_dict())
        assert torch.allclose(m(x), want(x), atol=1e-10)


def test_bfloat16_weights_and_autocast():
    m = _randomize(SPAM(12)).eval()
    x = torch.randn(2, 12, 9, 10)
    with torch.no_grad():
        want = m(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            auto = m(x)
        m16 = SPAM(12).eval().to(torch.bfloat16)
        m16.load_state_dict(m.state_dict())
        half = m16(x.bfloat16())
    assert half.dtype == torch.bfloat16 and auto.dtype == torch.bfloat16
    scale = want.abs().max()
    assert (half.float() - want).abs().max() < 0.05 * scale
    assert (auto.float() - want).abs().max() < 0.05 * scale


def test_bad_inputs_raise_one_clear_error():
    with pytest.raises(FreqkitError, match="unknown transform"):
        SPAM(12, transform="fft")
    with pytest.raises(FreqkitError, match="chunks"):
        SPAM(4)
    with pytest.raises(FreqkitError, match=r"\(B, 12, H, W\)"):
        SPAM(12)(torch.randn(1, 8, 5, 5))
