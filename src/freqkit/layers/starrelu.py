"""StarReLU (MetaFormer baselines): s * relu(x)^2 + b with learnable scalars s, b.

FDAM uses it in front of the AttInv gates and inside the FreqScale routing; the released keys
are ``<name>.scale`` and ``<name>.bias``, each of shape (1,).
"""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["StarReLU"]


class StarReLU(nn.Module):
    """Elementwise s * relu(x)^2 + b on any shape; s, b are learnable scalars (shape (1,))."""

    def __init__(self, scale_value: float = 1.0, bias_value: float = 0.0) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.full((1,), float(scale_value)))
        self.bias = nn.Parameter(torch.full((1,), float(bias_value)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = torch.relu(x)
        # cast the scalars so that a bfloat16 input under float32 weights stays bfloat16
        return torch.addcmul(self.bias.to(x.dtype), r * self.scale.to(x.dtype), r)
