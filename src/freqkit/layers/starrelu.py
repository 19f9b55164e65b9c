"""StarReLU (MetaFormer baselines): s * relu(x)^2 + b with learnable scalars s, b.

FDAM uses it in front of the AttInv gates and inside the FreqScale routing; SPANetV2 in its MLPs. The
released keys are ``<name>.scale`` and ``<name>.bias``, each of shape (1,): timm's StarReLU has the same
parameters and init (s = 1, b = 0), so this is timm's class with a dtype-preserving forward.
"""

from __future__ import annotations

import torch
from timm.models.metaformer import StarReLU as _TimmStarReLU

__all__ = ["StarReLU"]


class StarReLU(_TimmStarReLU):
    """Elementwise s * relu(x)^2 + b on any shape; s, b are learnable scalars (shape (1,)), as in timm."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # timm's forward promotes a bfloat16 input under float32 scalars to float32; the FDAM paths keep the input dtype
        r = torch.relu(x)
        return torch.addcmul(self.bias.to(x.dtype), r * self.scale.to(x.dtype), r)
