"""AttnScale (Wang et al., ICLR 2022): amplify the high-pass part of each head's attention.

    A' = U + (1 + w_h) (A - U)

with U the uniform (DC, low-pass) attention over each query's valid keys and w_h one learnable
scalar per head (released key ``lamb``), initialized to 0 so that A' = A. On the fused path the
filter never builds A: A' V = (1 + w) A V - w U V, where U V is one reduction over the values
when no mask is given.

Prefix tokens (CLS, registers): the released code averages over all N tokens
(``include_prefix=True``, the default). With ``include_prefix=False`` U averages over the spatial
keys only; the filter then needs ``num_prefix_tokens``, which ``freqkit.convert`` sets from the
timm model (or pass it to the constructor).
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import torch
from torch import nn

from freqkit.errors import FreqkitError
from freqkit.layers._tracing import fx_tracing
from freqkit.layers.attention import AttentionContext, AttentionFilter

__all__ = ["AttnScale"]


def _exclude_prefix_keys(
    attn_mask: Optional[torch.Tensor], is_causal: bool, n: int, num_prefix: int, like: torch.Tensor
) -> torch.Tensor:
    """An SDPA mask (bool, or additive float) broadcastable to (B, heads, N, N) that also hides the
    first ``num_prefix`` keys; the causal constraint is folded in because SDPA cannot take both."""
    device = like.device
    spatial = torch.arange(n, device=device) >= num_prefix  # (N,) keys that may enter U
    if attn_mask is None or attn_mask.dtype == torch.bool:
        keep = spatial.expand(n, n)
        if attn_mask is not None:
            keep = keep & attn_mask
        if is_causal:
            keep = keep & torch.ones(n, n, dtype=torch.bool, device=device).tril()
        return keep
    bias = attn_mask.to(like.dtype) + torch.zeros(n, dtype=like.dtype, device=device).masked_fill(~spatial, float("-inf"))
    if is_causal:
        causal = torch.ones(n, n, dtype=torch.bool, device=device).tril()
        bias = bias.masked_fill(~causal, float("-inf"))
    return bias


class AttnScale(AttentionFilter):
    """AttnScale filter on A V (B, heads, N, d) -> A' V, A' = U + (1 + w)(A - U), w per head (init 0)."""

    def __init__(self, num_heads: int, include_prefix: bool = True, num_prefix_tokens: Optional[int] = None) -> None:
        super().__init__()
        if num_heads < 1:
            raise FreqkitError(f"AttnScale: num_heads must be >= 1, got {num_heads}; pass the attention's head count")
        self.num_heads = num_heads
        self.include_prefix = include_prefix
        # set by freqkit.convert from model.num_prefix_tokens; only read when include_prefix=False
        self.num_prefix_tokens = num_prefix_tokens
        # w of the paper; named after the released key so released checkpoints map one to one
        self.lamb = nn.Parameter(torch.zeros(num_heads))

    def extra_repr(self) -> str:
        return f"num_heads={self.num_heads}, include_prefix={self.include_prefix}, num_prefix_tokens={self.num_prefix_tokens}"

    def uniform_values(self, ctx: AttentionContext) -> torch.Tensor:
        """U V: (B, heads, 1, d) without a mask (one reduction), else (B, heads, N, d)."""
        skip = 0
        if not self.include_prefix:
            if self.num_prefix_tokens is None:
                raise FreqkitError(
                    "AttnScale(include_prefix=False) does not know the prefix-token count; pass num_prefix_tokens=... "
                    "or build it through freqkit.convert, which sets it from the model"
                )
            skip = int(self.num_prefix_tokens)
        v = ctx.v
        n = v.shape[-2]
        if not fx_tracing() and skip >= n:
            raise FreqkitError(f"AttnScale: {skip} prefix tokens leave no spatial key among {n} tokens; check num_prefix_tokens")
        if ctx.attn_mask is None and not ctx.is_causal:
            return v[..., skip:, :].mean(dim=-2, keepdim=True)
        if skip == 0:
            return ctx.uniform(v)
        mask = _exclude_prefix_keys(ctx.attn_mask, ctx.is_causal, n, skip, v)
        return dataclasses.replace(ctx, attn_mask=mask, is_causal=False).uniform(v)

    def forward(self, out: torch.Tensor, ctx: AttentionContext) -> torch.Tensor:
        self.check_heads(out)
        w = self.lamb.to(out.dtype).view(1, -1, 1, 1)
        uv = self.uniform_values(ctx)
        # (1 + w) A V - w U V as one fused pass over A V; w U V is (B, heads, 1, d) without a mask
        return torch.addcmul(-(w * uv), out, 1 + w)
