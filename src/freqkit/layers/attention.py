"""Multi-head self-attention with timm's parameter names and a pluggable attention filter.

The filter sees the attention output ``A V`` per head and can ask for more products with the same
attention matrix through ``ctx.attend`` (a second fused pass), so methods such as AttInv,
AttnScale and GFSA never build the N x N matrix on the fused path.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn

from freqkit.errors import FreqkitError
from freqkit.layers._tracing import fx_tracing

__all__ = ["Attention", "AttentionContext", "AttentionFilter", "additive_mask"]


@dataclass
class AttentionContext:
    """What an attention filter may use, all per head: q, k, v (B, heads, N, d), the block's
    normalized input x (B, N, C), the mask, and ``attend(t)`` = A t for t (B, heads, N, d')."""

    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    x: torch.Tensor
    attend: Callable[[torch.Tensor], torch.Tensor]
    attn_mask: Optional[torch.Tensor] = None
    is_causal: bool = False
    # True when the A V handed to the filter is the attention's own temporary, which a filter may overwrite
    out_is_scratch: bool = False

    def uniform(self, t: torch.Tensor) -> torch.Tensor:
        """U t with U uniform over each query's valid keys: (B, heads, N, d') -> same shape.

        Without a mask this is the token mean; with one, masked keys get no weight (a softmax of
        all-equal logits under the same mask), unlike reference code that averages over all keys.
        """
        if self.attn_mask is None and not self.is_causal:
            return t.mean(dim=-2, keepdim=True).expand_as(t)
        zeros = torch.zeros_like(self.q)
        return F.scaled_dot_product_attention(zeros, self.k, t, attn_mask=self.attn_mask, is_causal=self.is_causal)


class AttentionFilter(nn.Module):
    """Base class of attention filters: ``forward(out, ctx)`` maps A V (B, heads, N, d) to the
    filtered output of the same shape."""

    def forward(self, out: torch.Tensor, ctx: AttentionContext) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def check_heads(self, out: torch.Tensor) -> None:
        """One clear error when A V (B, heads, N, d) has another head count than ``self.num_heads`` (skipped under torch.fx)."""
        if not fx_tracing() and (out.ndim != 4 or out.shape[1] != self.num_heads):
            raise FreqkitError(
                f"{type(self).__name__} was built for {self.num_heads} heads but got A V of shape {tuple(out.shape)} (B, heads, N, d); "
                "build it with the attention's num_heads"
            )


def additive_mask(attn_mask: Optional[torch.Tensor], is_causal: bool, n: int, like: torch.Tensor) -> Optional[torch.Tensor]:
    """SDPA-style bool / float mask (and causal flag) -> additive float mask broadcastable to (B, heads, N, N)."""
    bias = None
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            bias = torch.zeros(attn_mask.shape, dtype=like.dtype, device=like.device)
            bias = bias.masked_fill(~attn_mask, float("-inf"))
        else:
            bias = attn_mask.to(like.dtype)
    if is_causal:
        causal = torch.ones(n, n, dtype=torch.bool, device=like.device).tril()
        c = torch.zeros(n, n, dtype=like.dtype, device=like.device).masked_fill(~causal, float("-inf"))
        bias = c if bias is None else bias + c
    return bias


class Attention(nn.Module):
    """Self-attention (B, N, C) -> (B, N, C) computing A V with SDPA, then an optional filter.

    Parameter names match timm's ``Attention`` (``qkv``, ``q_norm``, ``k_norm``, ``norm``,
    ``proj``) so timm weights load unchanged. ``fused`` is the switch every freqkit layer has:
    True (default) runs SDPA, False builds the explicit attention matrix (the reference path for
    tests and benchmarks); filters follow it through ``ctx.attend``.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int = 8,
        qkv_bias: bool = False,
        qk_norm: bool = False,
        scale_norm: bool = False,
        proj_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        norm_layer: Optional[Callable[..., nn.Module]] = None,
        filter: Optional[AttentionFilter] = None,
        fused: bool = True,
    ) -> None:
        super().__init__()
        if dim % num_heads != 0:
            raise FreqkitError(
                f"Attention: dim {dim} is not divisible by num_heads {num_heads}; choose a head count that divides the channels"
            )
        if (qk_norm or scale_norm) and norm_layer is None:
            norm_layer = nn.LayerNorm
        self.dim = dim
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.fused = fused
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.q_norm = norm_layer(self.head_dim) if qk_norm else nn.Identity()
        self.k_norm = norm_layer(self.head_dim) if qk_norm else nn.Identity()
        self.attn_drop = nn.Dropout(attn_drop)
        self.norm = norm_layer(dim) if scale_norm else nn.Identity()
        self.proj = nn.Linear(dim, dim, bias=proj_bias)
        self.proj_drop = nn.Dropout(proj_drop)
        self.filter = filter

    def qkv_heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q, k, v of shape (B, heads, N, d) from x (B, N, C), q/k normalized."""
        if not fx_tracing() and (x.ndim != 3 or x.shape[-1] != self.dim):
            raise FreqkitError(
                f"Attention expects tokens of shape (B, N, {self.dim}), got {tuple(x.shape)}; "
                "flatten maps with x.flatten(2).transpose(1, 2) first"
            )
        B, N, _ = x.shape
        q, k, v = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        return self.q_norm(q), self.k_norm(k), v

    def attention_matrix(
        self, x: torch.Tensor, attn_mask: Optional[torch.Tensor] = None, is_causal: bool = False
    ) -> torch.Tensor:
        """The explicit softmax attention A (B, heads, N, N) of input x (B, N, C)."""
        q, k, _ = self.qkv_heads(x)
        return self._matrix(q, k, attn_mask, is_causal)

    def _matrix(self, q, k, attn_mask, is_causal) -> torch.Tensor:
        logits = (q * self.scale) @ k.transpose(-2, -1)
        bias = additive_mask(attn_mask, is_causal, q.shape[-2], logits)
        if bias is not None:
            logits = logits + bias
        return logits.softmax(dim=-1)

    def forward(self, x: torch.Tensor, attn_mask: Optional[torch.Tensor] = None, is_causal: bool = False) -> torch.Tensor:
        q, k, v = self.qkv_heads(x)
        B, N, C = x.shape
        drop_p = self.attn_drop.p if self.training else 0.0
        if self.fused:

            def attend(t: torch.Tensor) -> torch.Tensor:
                return F.scaled_dot_product_attention(q, k, t, attn_mask=attn_mask, dropout_p=drop_p, is_causal=is_causal)

        else:
            attn = self.attn_drop(self._matrix(q, k, attn_mask, is_causal))

            def attend(t: torch.Tensor) -> torch.Tensor:
                return attn @ t

        out = attend(v)
        if self.filter is not None:
            ctx = AttentionContext(
                q=q, k=k, v=v, x=x, attend=attend, attn_mask=attn_mask, is_causal=is_causal, out_is_scratch=True
            )
            out = self.filter(out, ctx)
        out = out.transpose(1, 2).reshape(B, N, C)
        out = self.norm(out)
        return self.proj_drop(self.proj(out))

    @classmethod
    def from_timm(cls, attn: nn.Module, filter: Optional[AttentionFilter] = None) -> "Attention":
        """A freqkit Attention with the weights (shared, not copied) of a timm ``Attention``."""
        dim = attn.qkv.in_features
        if getattr(attn, "gate", None) is not None or attn.qkv.out_features != 3 * dim or attn.proj.out_features != dim:
            raise FreqkitError(
                "convert supports timm ViT attention with dim_out == dim and no gate; this attention layer has another layout"
            )
        new = cls(dim, attn.num_heads, filter=filter)
        new.qkv, new.q_norm, new.k_norm = attn.qkv, attn.q_norm, attn.k_norm
        new.norm = getattr(attn, "norm", nn.Identity())
        new.proj, new.attn_drop, new.proj_drop = attn.proj, attn.attn_drop, attn.proj_drop
        new.scale = attn.scale
        return new
