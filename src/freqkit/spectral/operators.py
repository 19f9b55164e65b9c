"""Token operators of attention layers as matrices, and the local frequency response of a stack of them.

An attention map is a token operator (N, N); a shift-invariant one is circulant, i.e. a periodic
convolution by a stencil (:func:`circulant`). AttInv mixes A and its inversion I - A per query
(:func:`layer_kernel`); the local response of two stacked operators (:func:`stack_response`) is the
product of their single responses when both are circulant (FDAM supplementary, eq. 25).
"""

from __future__ import annotations

from typing import Union

import torch

from freqkit.errors import FreqkitError
from freqkit.spectral.response import local_response

__all__ = ["circulant", "periodic_gaussian", "layer_kernel", "stack_response"]


def circulant(stencil: torch.Tensor) -> torch.Tensor:
    """Periodic convolution by a stencil (H, W) as a token matrix (H*W, H*W): K[q, k] = stencil[(k - q) mod (H, W)]."""
    if stencil.ndim != 2:
        raise FreqkitError(f"circulant: stencil must be (H, W), got {tuple(stencil.shape)}")
    h, w = stencil.shape
    qy, qx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    qy, qx = qy.reshape(-1), qx.reshape(-1)
    dy = (qy[None, :] - qy[:, None]) % h
    dx = (qx[None, :] - qx[:, None]) % w
    return stencil[dy, dx]


def periodic_gaussian(grid: tuple[int, int], sigma: float) -> torch.Tensor:
    """Periodic Gaussian attention stencil (H, W) centred at token 0, summing to 1 (a low-pass kernel)."""
    h, w = int(grid[0]), int(grid[1])
    dy = torch.arange(h, dtype=torch.float64)
    dx = torch.arange(w, dtype=torch.float64)
    dy, dx = torch.minimum(dy, h - dy), torch.minimum(dx, w - dx)
    g = torch.exp(-(dy[:, None] ** 2 + dx[None, :] ** 2) / (2.0 * float(sigma) ** 2))
    return g / g.sum()


def layer_kernel(attn: torch.Tensor, low: Union[float, torch.Tensor], high: Union[float, torch.Tensor]) -> torch.Tensor:
    """AttInv's token operator for attention (..., N, N): low * A + high * (I - A) (low, high per query row or scalars)."""
    n = attn.shape[-1]
    eye = torch.eye(n, dtype=attn.dtype, device=attn.device)
    low = torch.as_tensor(low, dtype=attn.dtype, device=attn.device)
    high = torch.as_tensor(high, dtype=attn.dtype, device=attn.device)
    if low.ndim:
        low = low[..., None]
    if high.ndim:
        high = high[..., None]
    return low * attn + high * (eye - attn)


def stack_response(first: torch.Tensor, second: torch.Tensor, grid: tuple[int, int], query: int) -> torch.Tensor:
    """Local response |F(row q of second @ first)| (H, W), centred, of applying token operators (N, N) ``first`` then ``second``.

    For shift-invariant (circulant) operators it equals the product of the two single local responses
    (the FDAM supplementary, eq. 25).
    """
    comp = second @ first
    return local_response(comp[None, None, query : query + 1], grid, 0, queries="all")[0, 0, 0]
