"""FeatScale (Wang et al., ICLR 2022): re-weight the DC and high-frequency parts of a token map.

On the attention-branch output Z (B, N, C):

    Z' = Z + s_d * mean_tokens(Z) + s_h * (Z - mean_tokens(Z))
       = (1 + s_h) Z + (s_d - s_h) mean_tokens(Z),

s_d, s_h per channel (released keys ``lamb1``, ``lamb2``), initialized to 0 (identity). The mean
runs over all N tokens, prefix tokens included, as released. ``double_add=True`` reproduces the
released DeiT file, which adds the two scaled terms twice (Z + 2 s_d mean + 2 s_h (Z - mean)); it
exists for conformance with that file only. Plugs into ``FreqBlock.feat_scale``.
"""

from __future__ import annotations

import torch
from torch import nn

from freqkit.errors import FreqkitError
from freqkit.layers._tracing import fx_tracing

__all__ = ["FeatScale"]


class FeatScale(nn.Module):
    """FeatScale on tokens (B, N, C) -> (B, N, C): Z + s_d mean(Z) + s_h (Z - mean(Z)), s_d, s_h per channel (init 0)."""

    def __init__(self, dim: int, double_add: bool = False) -> None:
        super().__init__()
        if dim < 1:
            raise FreqkitError(f"FeatScale: dim must be >= 1, got {dim}; pass the token channel count")
        self.dim = dim
        self.double_add = double_add
        # s_d and s_h of the paper, named after the released keys
        self.lamb1 = nn.Parameter(torch.zeros(dim))
        self.lamb2 = nn.Parameter(torch.zeros(dim))

    def extra_repr(self) -> str:
        return f"dim={self.dim}, double_add={self.double_add}"

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if not fx_tracing() and (z.ndim != 3 or z.shape[-1] != self.dim):
            raise FreqkitError(
                f"FeatScale expects tokens of shape (B, N, {self.dim}), got {tuple(z.shape)}; "
                "flatten maps with x.flatten(2).transpose(1, 2) first"
            )
        k = 2.0 if self.double_add else 1.0
        s_d = self.lamb1.to(z.dtype) * k
        s_h = self.lamb2.to(z.dtype) * k
        dc = z.mean(dim=1, keepdim=True)  # (B, 1, C)
        # one fused pass over Z; the DC term is (B, 1, C)
        return torch.addcmul((s_d - s_h) * dc, z, 1 + s_h)
