"""StarReLU (MetaFormer baselines): s * relu(x)^2 + b with learnable scalars s, b.

FDAM uses it in front of the AttInv gates and inside the FreqScale routing; SPANetV2 in its MLPs. The
released keys are ``<name>.scale`` and ``<name>.bias``, each of shape (1,): timm's StarReLU has the same
parameters and init (s = 1, b = 0), so this is timm's class with a dtype-preserving forward.
"""

from __future__ import annotations

import torch
from timm.models.metaformer import StarReLU as _TimmStarReLU

from freqkit.layers._tracing import no_graph

__all__ = ["StarReLU"]


class StarReLU(_TimmStarReLU):
    """Elementwise s * relu(x)^2 + b on any shape; s, b are learnable scalars (shape (1,)), as in timm.

    ``inplace=True`` (for an input that nobody reads afterwards, such as an MLP's hidden layer) writes the
    result into x when no autograd graph is needed, with the same float32 result bit for bit.
    """

    def __init__(self, scale_value: float = 1.0, bias_value: float = 0.0, inplace: bool = False, **kwargs) -> None:
        # timm's module keeps the flag (and an in-place nn.ReLU its own forward would use); only this forward reads it
        super().__init__(scale_value=scale_value, bias_value=bias_value, inplace=bool(inplace), **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.inplace and no_graph(x, self.scale, self.bias) and x.device.type == "cpu" and x.dtype == torch.float32:
            # two passes and no new tensor: on CPU a fresh activation-sized buffer pays a page fault per
            # 4 KiB, which costs more than the arithmetic at MetaFormer stage-1 sizes (CPU only: float(scale)
            # would synchronize a GPU stream, where the caching allocator reuses memory anyway). addcmul computes
            # b + (s * r) * r, the same rounding steps as the general path below
            r = x.relu_()
            return torch.addcmul(self.bias, r, r, value=float(self.scale), out=r)
        # timm's forward promotes a bfloat16 input under float32 scalars to float32; the FDAM paths keep the input dtype
        r = torch.relu(x)
        return torch.addcmul(self.bias.to(x.dtype), r * self.scale.to(x.dtype), r)
