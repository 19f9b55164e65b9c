"""Per-head summaries of softmax attention (B, heads, N, N): entropy, mean attention distance and the
high-frequency share of the local response. Each returns (B, heads): one number per image and head.
"""

from __future__ import annotations

import torch

from freqkit.spectral._common import check_ndim, to_compute, to_output
from freqkit.spectral.fourier import frequency_radius
from freqkit.spectral.response import _check_chunk, _spatial_rows

__all__ = ["attention_entropy", "attention_distance", "local_response_hf_share"]


def attention_entropy(attn: torch.Tensor) -> torch.Tensor:
    """Mean over query rows of the entropy -sum_j a_ij log a_ij (nats) of attention (..., Nq, N) -> (...).

    Every query row counts (prefix queries included); 0 for one-hot rows, log N for uniform rows.
    """
    check_ndim(attn, tuple(range(2, 16)), "attn", "(..., Nq, N)")
    a = to_compute(attn)
    ent = -torch.special.xlogy(a, a).sum(dim=-1).mean(dim=-1)
    return to_output(ent, attn)


def _grid_distances(h: int, w: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Euclidean distance in patches between every pair of cells of an (H, W) grid -> (H*W, H*W)."""
    yy, xx = torch.meshgrid(
        torch.arange(h, device=device, dtype=dtype), torch.arange(w, device=device, dtype=dtype), indexing="ij"
    )
    pts = torch.stack([yy.reshape(-1), xx.reshape(-1)], dim=-1)
    return torch.cdist(pts, pts)


def attention_distance(
    attn: torch.Tensor, grid_size: tuple[int, int], num_prefix_tokens: int = 0, chunk_size: int = 256
) -> torch.Tensor:
    """Mean attention distance in patches (Dosovitskiy et al. 2021, Fig. 7) of attn (B, heads, N, N) -> (B, heads).

    For each spatial query, the expected Euclidean grid distance sum_j a_ij ||p_i - p_j|| over the
    spatial keys, with the weights renormalised to the spatial keys (prefix keys have no position);
    a query with no spatial mass counts 0. Mean over spatial queries. Multiply by the patch size for pixels.
    """
    rows, (h, w) = _spatial_rows(attn, grid_size, num_prefix_tokens, "spatial")
    chunk = _check_chunk(chunk_size)
    dist = _grid_distances(h, w, attn.device, to_compute(rows[..., :1, :1]).dtype)
    total = None
    for start in range(0, rows.shape[2], chunk):
        blk = to_compute(rows[:, :, start : start + chunk])
        mass = blk.sum(dim=-1)
        num = (blk * dist[start : start + blk.shape[2]]).sum(dim=-1)
        part = torch.where(mass > 0, num / torch.where(mass > 0, mass, torch.ones_like(mass)), torch.zeros_like(num)).sum(dim=-1)
        total = part if total is None else total + part
    return to_output(total / rows.shape[2], attn)


def local_response_hf_share(
    attn: torch.Tensor, grid_size: tuple[int, int], num_prefix_tokens: int = 0, cutoff: float = 0.5, chunk_size: int = 256
) -> torch.Tensor:
    """High-frequency share of the local response of attn (B, heads, N, N) -> (B, heads).

    For each spatial query's kernel W_q (its attention over the spatial keys as an (H, W) map), the
    share of |F(W_q)|^2 at normalized radius rho > ``cutoff`` (as in `high_frequency_ratio`); a zero
    kernel counts 0. Mean over spatial queries. Sharp, local attention has a high share; smooth,
    global attention a low one.
    """
    rows, (h, w) = _spatial_rows(attn, grid_size, num_prefix_tokens, "spatial")
    chunk = _check_chunk(chunk_size)
    b, heads, nq, _ = rows.shape
    high = frequency_radius(h, w, centered=False, device=attn.device, dtype=torch.float64) > float(cutoff)
    total = None
    for start in range(0, nq, chunk):
        blk = to_compute(rows[:, :, start : start + chunk]).reshape(b, heads, -1, h, w)
        power = torch.fft.fft2(blk).abs().square()
        all_e = power.sum(dim=(-2, -1))
        hi_e = (power * high.to(power.dtype)).sum(dim=(-2, -1))
        part = torch.where(all_e > 0, hi_e / torch.where(all_e > 0, all_e, torch.ones_like(all_e)), torch.zeros_like(hi_e)).sum(
            dim=-1
        )
        total = part if total is None else total + part
    return to_output(total / nq, attn)
