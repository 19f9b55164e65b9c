"""A timm-compatible ViT block with pluggable spectral parts.

Parameter names match timm's ``Block`` (``norm1``, ``attn``, ``ls1``, ``norm2``, ``mlp``, ``ls2``)
so timm weights load unchanged; the optional parts keep the released names:
``attn.filter`` (AttInv / AttnScale / GFSA), ``feat_scale`` (FeatScale on the attention branch),
``freq_scale_1`` / ``freq_scale_2`` (FreqScale on the attention / MLP branch).

    a = FS1(FeatScale(attn(norm1(x)))) ; x = x + drop_path(ls1(a))
    m = FS2(mlp(norm2(x)))             ; x = x + drop_path(ls2(m))

where FS(t) = t + FreqScale(t) on spatial tokens (prefix tokens bypass it).

FreqScale needs the token grid (H, W), passed explicitly: ``block(x, grid_size=(H, W),
num_prefix_tokens=p)``. freqkit's own models do, and so does a timm ViT converted by
``freqkit.convert`` (its ``forward_features`` / ``forward_intermediates`` pass the patch grid).
A caller that cannot pass it may store a default on the blocks with :func:`set_grid`; a grid
passed to ``forward`` always wins.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import nn

from freqkit.errors import FreqkitError
from freqkit.layers.attention import Attention

__all__ = ["FreqBlock", "set_grid"]


class FreqBlock(nn.Module):
    """Pre-norm transformer block (B, N, C) -> (B, N, C) with optional spectral parts."""

    def __init__(
        self,
        attn: Attention,
        mlp: nn.Module,
        norm1: nn.Module,
        norm2: nn.Module,
        ls1: Optional[nn.Module] = None,
        ls2: Optional[nn.Module] = None,
        drop_path1: Optional[nn.Module] = None,
        drop_path2: Optional[nn.Module] = None,
        feat_scale: Optional[nn.Module] = None,
        freq_scale_1: Optional[nn.Module] = None,
        freq_scale_2: Optional[nn.Module] = None,
    ) -> None:
        super().__init__()
        self.norm1 = norm1
        self.attn = attn
        self.ls1 = ls1 if ls1 is not None else nn.Identity()
        self.drop_path1 = drop_path1 if drop_path1 is not None else nn.Identity()
        self.norm2 = norm2
        self.mlp = mlp
        self.ls2 = ls2 if ls2 is not None else nn.Identity()
        self.drop_path2 = drop_path2 if drop_path2 is not None else nn.Identity()
        self.feat_scale = feat_scale
        self.freq_scale_1 = freq_scale_1
        self.freq_scale_2 = freq_scale_2
        # default grid (H, W) and prefix count when forward gets none (set_grid, for callers that cannot pass one)
        self.grid_size: Optional[tuple[int, int]] = None
        self.num_prefix_tokens: int = 0

    @property
    def needs_grid(self) -> bool:
        """True when a part of this block needs the spatial grid."""
        return self.freq_scale_1 is not None or self.freq_scale_2 is not None

    def forward(
        self,
        x: torch.Tensor,
        attn_mask: Optional[torch.Tensor] = None,
        is_causal: bool = False,
        grid_size: Optional[Sequence[int]] = None,
        num_prefix_tokens: Optional[int] = None,
    ) -> torch.Tensor:
        """Tokens (B, N, C) -> (B, N, C); ``grid_size`` (H, W) and ``num_prefix_tokens`` are needed with FreqScale."""
        if grid_size is None:
            grid_size = self.grid_size
            if num_prefix_tokens is None:
                num_prefix_tokens = self.num_prefix_tokens
        p = 0 if num_prefix_tokens is None else int(num_prefix_tokens)
        if self.needs_grid and grid_size is None:
            raise FreqkitError(
                "FreqBlock: no token grid; call the block as block(x, grid_size=(H, W), num_prefix_tokens=p), "
                "or build the model through freqkit.convert / timm.create_model, which pass it every forward"
            )
        a = self.attn(self.norm1(x), attn_mask=attn_mask, is_causal=is_causal)
        if self.feat_scale is not None:
            a = self.feat_scale(a)
        if self.freq_scale_1 is not None:
            a = self.freq_scale_1.apply_tokens(a, grid_size, p)
        x = x + self.drop_path1(self.ls1(a))
        m = self.mlp(self.norm2(x))
        if self.freq_scale_2 is not None:
            m = self.freq_scale_2.apply_tokens(m, grid_size, p)
        return x + self.drop_path2(self.ls2(m))

    @classmethod
    def from_timm(
        cls,
        block: nn.Module,
        attn_filter: Optional[nn.Module] = None,
        feat_scale: Optional[nn.Module] = None,
        freq_scale_1: Optional[nn.Module] = None,
        freq_scale_2: Optional[nn.Module] = None,
    ) -> "FreqBlock":
        """A FreqBlock sharing every module and weight of a timm ViT ``Block``."""
        if isinstance(block, FreqBlock):
            raise FreqkitError(
                "this block is already converted by freqkit; convert each model once, with all methods in one call"
            )
        missing = [n for n in ("norm1", "attn", "norm2", "mlp") if not hasattr(block, n)]
        if missing:
            raise FreqkitError(
                f"convert supports timm ViT blocks (norm1, attn, norm2, mlp); {type(block).__name__} lacks {missing}"
            )
        attn = block.attn if isinstance(block.attn, Attention) else Attention.from_timm(block.attn)
        attn.filter = attn_filter
        return cls(
            attn=attn,
            mlp=block.mlp,
            norm1=block.norm1,
            norm2=block.norm2,
            ls1=getattr(block, "ls1", None),
            ls2=getattr(block, "ls2", None),
            drop_path1=getattr(block, "drop_path1", None),
            drop_path2=getattr(block, "drop_path2", None),
            feat_scale=feat_scale,
            freq_scale_1=freq_scale_1,
            freq_scale_2=freq_scale_2,
        )


def set_grid(module: nn.Module, grid_size: tuple[int, int], num_prefix_tokens: int = 0) -> None:
    """Store the token grid (H, W) and prefix count on every FreqBlock in ``module``, for forwards that pass none.

    Needed only where the caller of the blocks cannot pass the grid; a grid passed to ``FreqBlock.forward``
    always wins.
    """
    h, w = int(grid_size[0]), int(grid_size[1])
    if h < 1 or w < 1:
        raise FreqkitError(f"set_grid: grid {grid_size} must be at least 1 x 1")
    for m in module.modules():
        if isinstance(m, FreqBlock):
            m.grid_size = (h, w)
            m.num_prefix_tokens = int(num_prefix_tokens)
