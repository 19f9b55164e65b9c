"""Fourier diagnostics of spatial maps: frequency grid, log-amplitude spectrum, radial profile,
high-frequency ratio and relative log amplitude.

Conventions (docs/design.md, section 2): frequencies follow ``torch.fft.fftfreq`` (cycles per token in
[-1/2, 1/2)); the normalized radius is rho = sqrt(fu^2 + fv^2) / (1/2), so rho = 1 is the Nyquist
frequency along one axis. "Centred" maps are ``fftshift``-ed: DC sits at index (H // 2, W // 2).
"""

from __future__ import annotations

import torch

from freqkit.errors import FreqkitError
from freqkit.spectral._common import check_ndim, to_compute, to_output

# Points whose radius lands within this of a ring edge go to the upper ring, so exact edges such as
# rho = 0.5 are binned the same whatever the rounding of sqrt.
_EDGE_TOL = 1e-9


def frequency_radius(
    h: int,
    w: int,
    *,
    centered: bool = True,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Normalized radius rho = sqrt(fu^2 + fv^2) / (1/2) of every frequency of an (H, W) grid -> (H, W)."""
    if int(h) <= 0 or int(w) <= 0:
        raise FreqkitError(f"frequency_radius needs a positive grid, got {(h, w)}")
    dtype = dtype or torch.get_default_dtype()
    fu = torch.fft.fftfreq(int(h), device=device, dtype=torch.float64)
    fv = torch.fft.fftfreq(int(w), device=device, dtype=torch.float64)
    if centered:
        fu, fv = torch.fft.fftshift(fu), torch.fft.fftshift(fv)
    rho = torch.sqrt(fu[:, None] ** 2 + fv[None, :] ** 2) / 0.5
    return rho.to(dtype)


def spectrum(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Centred log-amplitude spectrum of maps (B, C, H, W): mean over B and C of log(|fftshift(fft2 x)| + eps) -> (H, W)."""
    check_ndim(x, (4,), "x", "(B, C, H, W)")
    return to_output(_log_spectrum(x, eps), x)


def radial_bin_centers(
    bins: int = 16,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Centre radius (k + 1/2) / bins of each of the `bins` equal rings on [0, 1] -> (bins,)."""
    bins = _check_bins(bins)
    dtype = dtype or torch.get_default_dtype()
    return (torch.arange(bins, device=device, dtype=torch.float64) + 0.5).div(bins).to(dtype)


def radial_profile(spec: torch.Tensor, bins: int = 16, *, centered: bool = True) -> torch.Tensor:
    """Mean of spectra (..., H, W) over `bins` equal rings of rho on [0, 1] -> (..., bins).

    Ring k holds the frequencies with k / bins <= rho < (k + 1) / bins; rho = 1 (the axis Nyquist
    frequency of even sizes) belongs to the last ring, and the corner frequencies with rho > 1 are left
    out, so every ring is a full circle. A ring that holds no frequency of the grid (small grids, many
    bins) is filled by linear interpolation between the nearest non-empty rings on either side (by
    ring centre), or copies the nearest non-empty ring below it past the last one; ring 0 always holds
    DC, so the result never has NaN. `centered` says whether `spec` is fftshift-ed (as from
    `spectrum`) or in raw fft2 order.
    """
    check_ndim(spec, tuple(range(2, 16)), "spec", "(..., H, W)")
    bins = _check_bins(bins)
    h, w = spec.shape[-2:]
    if h == 0 or w == 0:
        raise FreqkitError(f"spec has an empty grid {(h, w)}; pass a spectrum of at least 1x1")
    rings = _ring_operator(h, w, bins, centered=centered, device=spec.device)
    return to_output(_apply_rings(to_compute(spec), rings), spec)


def high_frequency_ratio(x: torch.Tensor, cutoff: float = 0.5) -> torch.Tensor:
    """Share of spectral energy above the normalized radius `cutoff` for maps (B, C, H, W) -> (B,).

    Per channel: sum of |F(x)|^2 over rho > cutoff divided by the sum over all frequencies; an
    all-zero channel counts as 0. The result is the mean over channels.
    """
    check_ndim(x, (4,), "x", "(B, C, H, W)")
    xc = to_compute(x)
    h, w = xc.shape[-2:]
    # the ratio is scale-free; normalizing each channel keeps |F|^2 far from float32 overflow
    scale = xc.abs().amax(dim=(-2, -1), keepdim=True)
    xc = xc / torch.where(scale > 0, scale, torch.ones_like(scale))
    power = torch.fft.fft2(xc).abs().square()
    high = frequency_radius(h, w, centered=False, device=x.device, dtype=torch.float64) > cutoff
    total = power.sum(dim=(-2, -1))
    above = (power * high.to(power.dtype)).sum(dim=(-2, -1))
    ratio = torch.where(total > 0, above / torch.where(total > 0, total, torch.ones_like(total)), 0.0)
    return to_output(ratio.mean(dim=1), x)


def relative_log_amplitude(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Relative log amplitude (Park & Kim 2022) of maps (B, C, H, W) -> (K,), K = max(ceil(H/2), ceil(W/2)).

    Takes the centred log-amplitude map of `spectrum` along the half diagonal from DC, index
    (H // 2, W // 2), to the corner of the highest positive frequencies, index (H - 1, W - 1), and
    subtracts the DC value, so point 0 is 0 and the last point is the "high-frequency dlog amplitude".
    On square grids this is exactly the diagonal. On non-square grids point k sits at the fraction
    t = k / (K - 1) of the way along each axis, rounded half up to the nearest index, so the
    shorter axis repeats indices.
    """
    check_ndim(x, (4,), "x", "(B, C, H, W)")
    spec = _log_spectrum(x, eps)
    rows, cols = _half_diagonal(*spec.shape, spec.device)
    line = spec[rows, cols]
    return to_output(line - line[0], x)


def high_frequency_log_amplitude(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Last point of `relative_log_amplitude` for maps (B, C, H, W) -> scalar tensor."""
    return relative_log_amplitude(x, eps=eps)[-1]


def _ring_operator(
    h: int, w: int, bins: int, *, centered: bool, device: torch.device | str | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Data-free parts of a radial profile: (kept pixel mask (H*W,), ring of each kept pixel,
    pixels per ring (bins,), empty-ring fill matrix (bins, bins))."""
    rho = frequency_radius(h, w, centered=centered, device=device, dtype=torch.float64).reshape(-1)
    keep = rho <= 1.0 + _EDGE_TOL
    idx = torch.floor(rho[keep] * bins + _EDGE_TOL).long().clamp_(max=bins - 1)
    counts = torch.zeros(bins, dtype=torch.float64, device=device).index_add_(0, idx, torch.ones_like(idx, dtype=torch.float64))
    return keep, idx, counts, _fill_empty_rings(counts > 0).to(device)


def _apply_rings(spec: torch.Tensor, rings: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Radial profile (..., bins) of spectra (..., H, W) with a precomputed `_ring_operator`."""
    keep, idx, counts, fill = rings
    lead = spec.shape[:-2]
    flat = spec.reshape(-1, spec.shape[-2] * spec.shape[-1])
    sums = flat.new_zeros(flat.shape[0], counts.numel()).index_add_(1, idx, flat[:, keep])
    means = sums / counts.clamp(min=1).to(sums.dtype)
    return (means @ fill.to(sums.dtype)).reshape(*lead, counts.numel())


def _log_spectrum(x: torch.Tensor, eps: float) -> torch.Tensor:
    """`spectrum` in the compute dtype."""
    amp = torch.fft.fft2(to_compute(x)).abs()
    return torch.fft.fftshift(torch.log(amp + eps).mean(dim=(0, 1)), dim=(-2, -1))


def _check_bins(bins: int) -> int:
    if int(bins) != bins or int(bins) < 1:
        raise FreqkitError(f"bins must be a positive int, got {bins!r}")
    return int(bins)


def _fill_empty_rings(filled: torch.Tensor) -> torch.Tensor:
    """(bins, bins) matrix T such that means @ T copies filled rings and interpolates empty ones."""
    bins = filled.numel()
    have = [k for k in range(bins) if bool(filled[k])]
    t = torch.zeros(bins, bins, dtype=torch.float64)
    for k in range(bins):
        if bool(filled[k]):
            t[k, k] = 1.0
            continue
        lo = max((j for j in have if j < k), default=None)
        hi = min((j for j in have if j > k), default=None)
        if lo is None or hi is None:
            t[lo if hi is None else hi, k] = 1.0
        else:
            frac = (k - lo) / (hi - lo)
            t[lo, k] = 1.0 - frac
            t[hi, k] = frac
    return t


def _half_diagonal(h: int, w: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Row and column indices of the centred half diagonal from DC to (H - 1, W - 1)."""
    h0, w0 = h // 2, w // 2
    k_pts = max(h - h0, w - w0)
    k = torch.arange(k_pts, device=device)
    if k_pts == 1:
        return k + h0, k + w0
    den = 2 * (k_pts - 1)
    # integer floor(k * span / (K - 1) + 1/2): exact rounding, no float ties
    rows = h0 + (2 * k * (h - 1 - h0) + (k_pts - 1)) // den
    cols = w0 + (2 * k * (w - 1 - w0) + (k_pts - 1)) // den
    return rows, cols


def full_plane(half: torch.Tensor, width: int) -> torch.Tensor:
    """Real rfft2 half-plane filter (..., H, W // 2 + 1) -> the equivalent full-plane filter (..., H, W), uncentred.

    For real x: ``ifft2(fft2(x) * full_plane(f, W)).real == irfft2(rfft2(x) * f, s=(H, W))``.
    """
    h, rw = half.shape[-2], half.shape[-1]
    if rw != width // 2 + 1:
        raise FreqkitError(f"full_plane: a half-plane of {rw} columns does not belong to width {width} (needs {width // 2 + 1})")
    neg = (-torch.arange(h, device=half.device)) % h  # row of -k1
    out = torch.empty(*half.shape[:-1], width, dtype=half.dtype, device=half.device)
    out[..., :rw] = half
    if width > rw:
        cols = torch.arange(rw, width, device=half.device)
        out[..., rw:] = half[..., neg, :][..., width - cols]
    # irfft2 drops the imaginary part on the self-conjugate columns: the filter there acts as its even part
    for c in [0] + ([width // 2] if width % 2 == 0 else []):
        out[..., c] = 0.5 * (half[..., c] + half[..., neg, c])
    return out
