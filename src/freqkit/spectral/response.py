"""Frequency responses of attention (FDAM supplementary, Sec. A) and the token spectrum of an attention matrix.

All 2-D response maps are centred (``fftshift``-ed, DC at index (H // 2, W // 2)), like `spectrum`.
"""

from __future__ import annotations

from typing import Literal

import torch

from freqkit.errors import FreqkitError
from freqkit.spectral._common import check_grid, check_ndim, output_dtype, to_compute, to_output
from freqkit.spectral.fourier import _apply_rings, _check_bins, _ring_operator


def global_response(
    v: torch.Tensor,
    y: torch.Tensor,
    mode: Literal["aggregate", "per_channel"] = "aggregate",
    eps: float = 1e-6,
) -> torch.Tensor:
    """Global frequency response |F(Y)| / (|F(V)| + eps) of an operator V (B, C, H, W) -> Y (B, C, H, W).

    mode="per_channel" gives (B, C, H, W); mode="aggregate" divides the channel-summed amplitudes,
    (B, H, W). Maps are centred (fftshift-ed).
    """
    check_ndim(v, (4,), "v", "(B, C, H, W)")
    check_ndim(y, (4,), "y", "(B, C, H, W)")
    if v.shape != y.shape:
        raise FreqkitError(f"v {tuple(v.shape)} and y {tuple(y.shape)} differ; pass the operator's input and output maps")
    if mode not in ("aggregate", "per_channel"):
        raise FreqkitError(f"unknown mode {mode!r}; use 'aggregate' or 'per_channel'")
    amp_v = torch.fft.fft2(to_compute(v)).abs()
    amp_y = torch.fft.fft2(to_compute(y)).abs()
    if mode == "aggregate":
        amp_v, amp_y = amp_v.sum(dim=1), amp_y.sum(dim=1)
    resp = torch.fft.fftshift(amp_y / (amp_v + eps), dim=(-2, -1))
    like = v if v.is_floating_point() else y
    return to_output(resp, like)


def local_response(
    attn: torch.Tensor,
    grid_size: tuple[int, int],
    num_prefix_tokens: int = 0,
    *,
    queries: Literal["spatial", "all"] = "spatial",
    chunk_size: int = 256,
) -> torch.Tensor:
    """Local frequency response |F(W_q)| of each query's attention kernel, attn (B, heads, Nq, N) -> (B, heads, Nq', H, W).

    W_q is the query's row over the spatial keys (the first `num_prefix_tokens` key columns are
    dropped) reshaped to (H, W); its DC value is the attention mass on spatial keys (1 when there are
    no prefix tokens). queries="spatial" keeps the H*W spatial queries of self-attention (Nq' = H*W),
    "all" keeps every query row (Nq' = Nq). Maps are centred; work is done `chunk_size` queries at a time.
    """
    rows, (h, w) = _spatial_rows(attn, grid_size, num_prefix_tokens, queries)
    chunk = _check_chunk(chunk_size)
    b, heads, nq, _ = rows.shape
    out = torch.empty((b, heads, nq, h, w), dtype=output_dtype(attn), device=attn.device)
    for start in range(0, nq, chunk):
        blk = to_compute(rows[:, :, start : start + chunk]).reshape(b, heads, -1, h, w)
        amp = torch.fft.fftshift(torch.fft.fft2(blk).abs(), dim=(-2, -1))
        out[:, :, start : start + chunk] = to_output(amp, attn)
    return out


def local_response_summary(
    attn: torch.Tensor,
    grid_size: tuple[int, int],
    num_prefix_tokens: int = 0,
    bins: int = 16,
    chunk_size: int = 256,
    *,
    queries: Literal["spatial", "all"] = "spatial",
) -> dict[str, torch.Tensor]:
    """Summary of `local_response` for attn (B, heads, Nq, N) without materializing it.

    Returns "mean" and "std" (B, bins): mean and population standard deviation over heads and queries
    of the radial profile (`radial_profile`, `bins` rings) of log(1 + |F(W_q)|), and "dc" (B,): the
    mean DC value |F(W_q)|(0, 0). Peak extra memory is about 6 x B x heads x chunk_size x H x W
    floats (144 MB measured on a GPU for 6 heads, a 64x64 grid and the default chunk_size).
    """
    rows, (h, w) = _spatial_rows(attn, grid_size, num_prefix_tokens, queries)
    chunk = _check_chunk(chunk_size)
    bins = _check_bins(bins)
    b, heads, nq, _ = rows.shape
    rings = _ring_operator(h, w, bins, centered=False, device=attn.device)
    count = 0
    mean = m2 = dc_sum = None
    for start in range(0, nq, chunk):
        blk = to_compute(rows[:, :, start : start + chunk]).reshape(b, heads, -1, h, w)
        amp = torch.fft.fft2(blk).abs()
        prof = _apply_rings(torch.log1p(amp), rings)  # (B, heads, q, bins)
        n_blk = heads * prof.shape[2]
        mean_blk = prof.mean(dim=(1, 2))
        m2_blk = (prof - mean_blk[:, None, None]).square().sum(dim=(1, 2))
        dc_blk = amp[..., 0, 0].sum(dim=(1, 2))
        if mean is None:
            count, mean, m2, dc_sum = n_blk, mean_blk, m2_blk, dc_blk
            continue
        # Chan et al. pairwise update: stable in float32, no float64 needed on any device
        total = count + n_blk
        delta = mean_blk - mean
        mean = mean + delta * (n_blk / total)
        m2 = m2 + m2_blk + delta.square() * (count * n_blk / total)
        dc_sum = dc_sum + dc_blk
        count = total
    std = (m2 / count).clamp(min=0).sqrt()
    return {
        "mean": to_output(mean, attn),
        "std": to_output(std, attn),
        "dc": to_output(dc_sum / count, attn),
    }


def attention_token_spectrum(attn: torch.Tensor) -> torch.Tensor:
    """Row L2 norms of F A F^H for attention (..., N, N), F the unitary N-point DFT -> (..., N).

    Entry k is the energy the attention sends to token frequency k (fft order: k = 0 is DC). F^H is
    unitary, so the row norms of F A F^H equal those of F A, which is all that is computed.
    """
    check_ndim(attn, tuple(range(2, 16)), "attn", "(..., N, N)")
    if attn.shape[-1] != attn.shape[-2]:
        raise FreqkitError(f"attn must be square over tokens (..., N, N), got {tuple(attn.shape)}; pass self-attention")
    fa = torch.fft.fft(to_compute(attn), dim=-2, norm="ortho")
    return to_output(torch.linalg.vector_norm(fa, dim=-1), attn)


def _spatial_rows(
    attn: torch.Tensor, grid_size: tuple[int, int], num_prefix_tokens: int, queries: str
) -> tuple[torch.Tensor, tuple[int, int]]:
    """View (B, heads, Nq', H*W) of the selected query rows over the spatial keys."""
    check_ndim(attn, (4,), "attn", "(B, heads, Nq, N)")
    h, w = check_grid(grid_size)
    p = int(num_prefix_tokens)
    nq, n = attn.shape[-2:]
    if p < 0 or n != p + h * w:
        raise FreqkitError(
            f"attn has {n} keys but grid_size {(h, w)} with {p} prefix tokens needs {p + h * w}; "
            "pass the grid and num_prefix_tokens of this layer"
        )
    if queries == "spatial":
        if nq != n:
            raise FreqkitError(f"queries='spatial' needs self-attention (Nq == N), got Nq={nq}, N={n}; use queries='all'")
        return attn[:, :, p:, p:], (h, w)
    if queries == "all":
        return attn[:, :, :, p:], (h, w)
    raise FreqkitError(f"unknown queries {queries!r}; use 'spatial' or 'all'")


def _check_chunk(chunk_size: int) -> int:
    if int(chunk_size) != chunk_size or int(chunk_size) < 1:
        raise FreqkitError(f"chunk_size must be a positive int, got {chunk_size!r}")
    return int(chunk_size)
