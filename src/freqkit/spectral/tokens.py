"""Splitting ViT token sequences into prefix tokens and a spatial map."""

from __future__ import annotations

import math

import torch

from freqkit.errors import FreqkitError
from freqkit.spectral._common import check_grid, check_ndim


def infer_grid(num_tokens: int, num_prefix_tokens: int = 0) -> tuple[int, int]:
    """(H, W) of a square token grid holding num_tokens - num_prefix_tokens spatial tokens."""
    n = int(num_tokens) - int(num_prefix_tokens)
    if num_prefix_tokens < 0 or n <= 0:
        raise FreqkitError(
            f"{num_tokens} tokens with {num_prefix_tokens} prefix tokens leave no spatial tokens; check num_prefix_tokens"
        )
    side = math.isqrt(n)
    if side * side != n:
        raise FreqkitError(
            f"{n} spatial tokens ({num_tokens} - {num_prefix_tokens} prefix) do not form a square grid; "
            "pass grid_size=(H, W) explicitly"
        )
    return side, side


def split_tokens(x: torch.Tensor, grid_size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Split tokens (B, N, C) into prefix tokens (B, P, C) and a map (B, C, H, W); P = N - H*W first tokens."""
    check_ndim(x, (3,), "x", "(B, N, C)")
    h, w = check_grid(grid_size)
    b, n, c = x.shape
    p = n - h * w
    if p < 0:
        raise FreqkitError(f"x has {n} tokens but grid_size {(h, w)} needs {h * w}; pass the grid of this layer's tokens")
    # timm puts CLS / distillation / register tokens before the patch tokens, row-major patches after
    prefix = x[:, :p]
    spatial = x[:, p:].transpose(1, 2).reshape(b, c, h, w)
    return prefix, spatial
