"""Conformance builders for SPANet / SPANetV2: SPAM, SPANet, ExSPAM (SPAM v2), SPANetV2.

Every builder loads the released state dict through the path users take: the layers accept the
released keys directly (SPAM checks and drops the fixed masks ``sps.<i>.filter``), the models go
through their ``checkpoint_filter_fn`` and a strict :func:`freqkit.load_checkpoint`.
"""

from __future__ import annotations

import re

import torch

from freqkit.layers import SPAM, SPAMv2
from freqkit.models import load_checkpoint
from freqkit.models.spanet import SPANet
from freqkit.models.spanet import checkpoint_filter_fn as spanet_filter
from freqkit.models.spanetv2 import SPANetV2
from freqkit.models.spanetv2 import checkpoint_filter_fn as spanetv2_filter

# released token-mixer class -> freqkit mixer name
_MIXERS = {"ExSPAM": "spam", "MixAttention": "mixattn", "Attention": "attn"}


def spam(meta: dict, state: dict[str, torch.Tensor], inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Released ``SPAM(dim, k_size, H, W, r)``; the mask is rebuilt for the input size."""
    a = meta["args"]
    module = SPAM(a["dim"], kernel_size=a["k_size"], radius=a["r"]).eval()
    module.load_state_dict(state, strict=True)
    return {"y": module(inputs["x"])}


def spanet(meta: dict, state: dict[str, torch.Tensor], inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Released ``SPANet(layers, embed_dims, radius, ...)`` classifier."""
    a = meta["args"]
    if any(r != 4 for r in a.get("mlp_ratios", [4] * 4)) or not all(a.get("downsamples", [True] * 4)):
        raise NotImplementedError(f"SPANet fixture with mlp_ratios {a.get('mlp_ratios')} / downsamples {a.get('downsamples')}")
    model = SPANet(depths=a["layers"], dims=a["embed_dims"], radius=a["radius"], num_classes=a["num_classes"]).eval()
    load_checkpoint(model, state, filter_fn=spanet_filter)
    return {"y": model(inputs["x"])}


def exspam(meta: dict, state: dict[str, torch.Tensor], inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Released ``ExSPAM(dim, num_heads, expand_ratio, size)`` on channels-last input (interleave layout)."""
    a = meta["args"]
    module = SPAMv2(a["dim"], num_scales=a["num_heads"], expand_ratio=a["expand_ratio"], size=a["size"]).eval()
    module.load_state_dict(state, strict=True)
    return {"y": module(inputs["x"])}


def _mixers(spec: str) -> list[str]:
    """'ExSPAM, ExSPAM, MixAttention, Attention' or 'ExSPAM x4' -> freqkit mixer names."""
    m = re.fullmatch(r"\s*(\w+)\s*x\s*(\d+)\s*", spec)
    names = [m.group(1)] * int(m.group(2)) if m else [s.strip() for s in spec.split(",")]
    return [_MIXERS[n] for n in names]


def spanetv2(meta: dict, state: dict[str, torch.Tensor], inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Released ``SPANetV2(depths, dims, token_mixers, MlpHead)``; one logits output per input."""
    a = meta["args"]
    if a.get("head_fn", "MlpHead") != "MlpHead":
        raise NotImplementedError(f"SPANetV2 fixture with head {a['head_fn']!r}")
    _, h, w = a.get("input_size", (3, 224, 224))
    model = SPANetV2(
        depths=a["depths"], dims=a["dims"], mixers=_mixers(a["token_mixers"]), num_classes=a["num_classes"], img_size=(h, w)
    ).eval()
    load_checkpoint(model, state, filter_fn=spanetv2_filter)
    return {f"{name}_logits": model(x) for name, x in inputs.items()}
