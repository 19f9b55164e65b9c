"""freqkit.spectral.fourier against brute-force DFT sums (FDAM supplementary, eq. 1) and closed forms."""

import math
from fractions import Fraction

import numpy as np
import pytest
import torch

from freqkit.errors import FreqkitError
from freqkit.spectral import (
    frequency_radius,
    high_frequency_log_amplitude,
    high_frequency_ratio,
    radial_bin_centers,
    radial_profile,
    relative_log_amplitude,
    spectrum,
)


@pytest.mark.parametrize("h,w", [(1, 1), (4, 4), (5, 6), (7, 2)])
def test_frequency_radius_matches_fftfreq_definition(ref, h, w):
    raw = frequency_radius(h, w, centered=False, dtype=torch.float64)
    for u in range(h):
        for v in range(w):
            expect = math.hypot(ref.freq(u, h), ref.freq(v, w)) / 0.5
            assert raw[u, v].item() == pytest.approx(expect, abs=1e-12)
    centred = frequency_radius(h, w, dtype=torch.float64).numpy()
    np.testing.assert_allclose(centred, ref.center(raw.numpy()), atol=0)
    assert centred[h // 2, w // 2] == 0.0


def test_frequency_radius_axis_nyquist_is_one():
    rho = frequency_radius(8, 6, centered=False, dtype=torch.float64)
    assert rho[4, 0].item() == 1.0 and rho[0, 3].item() == 1.0
    assert rho.dtype == torch.float64 and frequency_radius(3, 3).dtype == torch.get_default_dtype()


@pytest.mark.parametrize("h,w", [(4, 4), (5, 6), (3, 1)])
def test_spectrum_matches_bruteforce_dft(ref, h, w):
    x = torch.randn(2, 3, h, w, dtype=torch.float64)
    amp = np.abs(ref.dft2(x.numpy()))
    expect = ref.center(np.log(amp + 1e-6).mean(axis=(0, 1)))
    got = spectrum(x)
    assert got.shape == (h, w) and got.dtype == torch.float64
    np.testing.assert_allclose(got.numpy(), expect, atol=1e-10)


def _ring_of(rho: float, bins: int) -> int | None:
    """Documented binning: k / bins <= rho < (k + 1) / bins, rho = 1 in the last ring, rho > 1 out."""
    if rho > 1 + 1e-9:
        return None
    return min(int(math.floor(rho * bins + 1e-9)), bins - 1)


def _bruteforce_profile(ref, spec: np.ndarray, bins: int) -> np.ndarray:
    h, w = spec.shape
    sums, counts = [0.0] * bins, [0] * bins
    for i in range(h):
        for j in range(w):
            # centred index i holds frequency index (i - H // 2) mod H
            rho = math.hypot(ref.freq((i - h // 2) % h, h), ref.freq((j - w // 2) % w, w)) / 0.5
            k = _ring_of(rho, bins)
            if k is not None:
                sums[k] += spec[i, j]
                counts[k] += 1
    filled = [k for k in range(bins) if counts[k]]
    out = []
    for k in range(bins):
        if counts[k]:
            out.append(sums[k] / counts[k])
            continue
        lo = max((f for f in filled if f < k), default=None)
        hi = min((f for f in filled if f > k), default=None)
        if hi is None:
            out.append(sums[lo] / counts[lo])
        else:
            t = (k - lo) / (hi - lo)
            out.append((1 - t) * sums[lo] / counts[lo] + t * sums[hi] / counts[hi])
    return np.array(out)


@pytest.mark.parametrize("h,w,bins", [(9, 12, 4), (8, 8, 16), (3, 3, 16), (2, 5, 7), (1, 1, 3)])
def test_radial_profile_matches_bruteforce_rings(ref, h, w, bins):
    spec = torch.randn(h, w, dtype=torch.float64)
    got = radial_profile(spec, bins)
    np.testing.assert_allclose(got.numpy(), _bruteforce_profile(ref, spec.numpy(), bins), atol=1e-12)


def test_radial_profile_batched_and_uncentred_agree():
    spec = torch.randn(2, 3, 6, 7, dtype=torch.float64)
    prof = radial_profile(spec, 5)
    assert prof.shape == (2, 3, 5)
    torch.testing.assert_close(prof[1, 2], radial_profile(spec[1, 2], 5))
    raw = torch.fft.ifftshift(spec, dim=(-2, -1))
    torch.testing.assert_close(radial_profile(raw, 5, centered=False), prof)


@pytest.mark.parametrize("h,w,bins", [(1, 1, 16), (4, 7, 16), (16, 16, 8), (3, 2, 1)])
def test_radial_profile_of_constant_map_is_constant(h, w, bins):
    prof = radial_profile(torch.full((h, w), 2.5), bins)
    torch.testing.assert_close(prof, torch.full((bins,), 2.5))


def test_radial_bin_centers():
    expect = torch.tensor([0.125, 0.375, 0.625, 0.875], dtype=torch.float64)
    torch.testing.assert_close(radial_bin_centers(4, dtype=torch.float64), expect)
    with pytest.raises(FreqkitError):
        radial_bin_centers(0)


def _cosine_map(h, w, ku, kv):
    p = torch.arange(h, dtype=torch.float64)[:, None]
    q = torch.arange(w, dtype=torch.float64)[None, :]
    return torch.cos(2 * math.pi * (ku * p / h + kv * q / w))


def test_high_frequency_ratio_of_pure_cosines():
    # frequency (4/16, 0) has rho = 0.5; (3/16, 3/16) has rho = 0.53
    axis = _cosine_map(16, 16, 4, 0)[None, None]
    diag = _cosine_map(16, 16, 3, 3)[None, None]
    assert high_frequency_ratio(axis, cutoff=0.4).item() == pytest.approx(1.0, abs=1e-12)
    assert high_frequency_ratio(axis, cutoff=0.6).item() == pytest.approx(0.0, abs=1e-12)
    assert high_frequency_ratio(diag, cutoff=0.52).item() == pytest.approx(1.0, abs=1e-12)
    assert high_frequency_ratio(diag, cutoff=0.54).item() == pytest.approx(0.0, abs=1e-12)


def test_high_frequency_ratio_means_channels_and_zero_channel_counts_zero():
    low = _cosine_map(8, 8, 1, 0)
    high = _cosine_map(8, 8, 3, 1)  # rho = 2 * sqrt(9 + 1) / 8 = 0.79
    x = torch.stack([torch.stack([low, high]), torch.stack([high, torch.zeros(8, 8, dtype=torch.float64)])])
    got = high_frequency_ratio(x, cutoff=0.5)
    torch.testing.assert_close(got, torch.tensor([0.5, 0.5], dtype=torch.float64))


def test_high_frequency_ratio_matches_bruteforce(ref):
    x = torch.randn(2, 3, 5, 6, dtype=torch.float64)
    power = np.abs(ref.dft2(x.numpy())) ** 2
    rho = np.array([[math.hypot(ref.freq(u, 5), ref.freq(v, 6)) / 0.5 for v in range(6)] for u in range(5)])
    expect = (power * (rho > 0.3)).sum(axis=(-2, -1)) / power.sum(axis=(-2, -1))
    np.testing.assert_allclose(high_frequency_ratio(x, cutoff=0.3).numpy(), expect.mean(axis=1), atol=1e-12)


def _diag_expect(ref, x: np.ndarray, h: int, w: int) -> np.ndarray:
    """Park & Kim's relative log amplitude: centred log-amplitude, half diagonal, minus its DC value."""
    spec = ref.center(np.log(np.abs(ref.dft2(x)) + 1e-6).mean(axis=(0, 1)))
    k_pts = max(h - h // 2, w - w // 2)
    pts = []
    for k in range(k_pts):
        t = Fraction(k, max(k_pts - 1, 1))
        i = h // 2 + math.floor(t * (h - 1 - h // 2) + Fraction(1, 2))
        j = w // 2 + math.floor(t * (w - 1 - w // 2) + Fraction(1, 2))
        pts.append(spec[i, j])
    return np.array(pts) - spec[h // 2, w // 2]


@pytest.mark.parametrize("h,w", [(6, 6), (7, 7), (4, 8), (7, 3), (1, 5)])
def test_relative_log_amplitude_matches_reference(ref, h, w):
    x = torch.randn(2, 2, h, w, dtype=torch.float64)
    got = relative_log_amplitude(x)
    expect = _diag_expect(ref, x.numpy(), h, w)
    assert got.shape == (max(h - h // 2, w - w // 2),)
    np.testing.assert_allclose(got.numpy(), expect, atol=1e-10)
    assert got[0].item() == 0.0
    # the last point is the corner of the highest positive frequencies, on every grid
    spec = spectrum(x)
    assert got[-1].item() == pytest.approx((spec[h - 1, w - 1] - spec[h // 2, w // 2]).item(), abs=1e-12)
    assert high_frequency_log_amplitude(x).item() == pytest.approx(got[-1].item(), abs=1e-12)


def test_square_relative_log_amplitude_is_the_diagonal():
    x = torch.randn(1, 4, 8, 8, dtype=torch.float64)
    spec = spectrum(x)
    diag = spec.diagonal()[4:]
    torch.testing.assert_close(relative_log_amplitude(x), diag - diag[0])


def test_smooth_map_has_negative_high_frequency_log_amplitude():
    x = torch.randn(2, 4, 16, 16, dtype=torch.float64)
    blurred = x
    for _ in range(4):  # repeated 3x3 circular box filter: a low-pass operator
        blurred = sum(torch.roll(blurred, (a, b), (-2, -1)) for a in (-1, 0, 1) for b in (-1, 0, 1)) / 9
    assert high_frequency_log_amplitude(blurred) < high_frequency_log_amplitude(x) - 1.0
    assert high_frequency_ratio(blurred).mean() < high_frequency_ratio(x).mean()


def test_fourier_shape_errors():
    with pytest.raises(FreqkitError, match=r"\(B, C, H, W\)"):
        spectrum(torch.zeros(3, 4, 4))
    with pytest.raises(FreqkitError, match=r"\(B, C, H, W\)"):
        high_frequency_ratio(torch.zeros(4, 4))
    with pytest.raises(FreqkitError, match="bins"):
        radial_profile(torch.zeros(4, 4), bins=0)
    with pytest.raises(FreqkitError):
        frequency_radius(0, 3)
