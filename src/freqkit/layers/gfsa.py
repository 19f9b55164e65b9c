"""GFSA, graph-filter self-attention (Choi et al., 2024).

The attention A is read as a graph filter and replaced by a polynomial in A,

    H = w0 I + w1 A + wK (A + (K - 1)(A^2 - A)),

the first-order approximation of w0 I + w1 A + wK A^K. Defaults (as released): w0 = 0 and w1 = 1
fixed, wK one learnable scalar per head (released key ``lamb``) initialized to 0, so H = A at
init. Folding the coefficients,

    H V = w0 V + (w1 + (2 - K) wK) A V + (K - 1) wK A (A V),

costs one more fused attention pass (A applied to A V) and two elementwise passes; no N x N
matrix, let alone an N x N x N product, is formed on the fused path. Masks are respected because
both passes use the same mask. With attention dropout in training, the two fused passes draw
independent dropout patterns (the released code drops once and squares the dropped matrix).
"""

from __future__ import annotations

import torch
from torch import nn

from freqkit.errors import FreqkitError
from freqkit.layers.attention import AttentionContext, AttentionFilter

__all__ = ["GFSA"]


class GFSA(AttentionFilter):
    """GFSA filter on A V (B, heads, N, d) -> H V, H = w0 I + w1 A + wK (A + (K-1)(A^2 - A))."""

    def __init__(self, num_heads: int, K: int = 3, learn_w0: bool = False, learn_w1: bool = False) -> None:
        super().__init__()
        if num_heads < 1:
            raise FreqkitError(f"GFSA: num_heads must be >= 1, got {num_heads}; pass the attention's head count")
        if int(K) != K or K < 2:
            raise FreqkitError(f"GFSA: K must be an integer >= 2 (the approximated power A^K), got {K}; the paper uses 3 or 4")
        self.num_heads = num_heads
        self.K = int(K)
        # wK of the paper; named after the released key so released checkpoints map one to one
        self.lamb = nn.Parameter(torch.zeros(num_heads))
        # fixed coefficients are not parameters, so plain DeiT / released checkpoints load strictly
        self.w0 = nn.Parameter(torch.zeros(num_heads)) if learn_w0 else None
        self.w1 = nn.Parameter(torch.ones(num_heads)) if learn_w1 else None

    def extra_repr(self) -> str:
        return f"num_heads={self.num_heads}, K={self.K}, learn_w0={self.w0 is not None}, learn_w1={self.w1 is not None}"

    def forward(self, out: torch.Tensor, ctx: AttentionContext) -> torch.Tensor:
        self.check_heads(out)
        wk = self.lamb.to(out.dtype).view(1, -1, 1, 1)
        w1 = 1.0 if self.w1 is None else self.w1.to(out.dtype).view(1, -1, 1, 1)
        a2v = ctx.attend(out)  # A (A V): the one extra fused pass
        y = torch.addcmul(out * (w1 + (2 - self.K) * wk), a2v, (self.K - 1) * wk)
        if self.w0 is not None:
            y = torch.addcmul(y, ctx.v, self.w0.to(out.dtype).view(1, -1, 1, 1))
        return y
