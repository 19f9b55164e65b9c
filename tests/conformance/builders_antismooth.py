"""Conformance builders for the anti-oversmoothing family: AttnScale, FeatScale (released Block), GFSA.

Released keys map onto freqkit modules: attention-level ``lamb`` -> ``filter.lamb`` (AttnScale w,
GFSA wK); block-level ``lamb1`` / ``lamb2`` -> ``feat_scale.lamb1`` / ``feat_scale.lamb2``; every
other key (``qkv``, ``proj``, ``attn.*``, ``norm1``, ``norm2``, ``mlp.fc1``, ``mlp.fc2``) keeps
its name because freqkit uses timm's names, as the released code does.
"""

from __future__ import annotations

import re

import torch
from timm.layers import Mlp
from torch import nn

from freqkit.layers import GFSA, Attention, AttnScale, FeatScale, FreqBlock


def _load(module: nn.Module, state: dict[str, torch.Tensor], renames: dict[str, str]) -> None:
    module.load_state_dict({renames.get(k, k): v for k, v in state.items()}, strict=True)


def _attention(meta: dict, attn_filter: nn.Module) -> Attention:
    args = meta["args"]
    return Attention(args["dim"], args["num_heads"], qkv_bias=args.get("qkv_bias", False), filter=attn_filter)


def attnscale(meta: dict, state: dict[str, torch.Tensor], inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Released AttnScale ``Attention``: U = 1/N over all tokens, CLS included (include_prefix=True)."""
    attn = _attention(meta, AttnScale(meta["args"]["num_heads"], include_prefix=True)).eval()
    _load(attn, state, {"lamb": "filter.lamb"})
    return {"y": attn(inputs["x"])}


def gfsa(meta: dict, state: dict[str, torch.Tensor], inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Released GFSA ``Attention``: w0 = 0, w1 = 1 fixed, wK = ``lamb`` per head."""
    args = meta["args"]
    attn = _attention(meta, GFSA(args["num_heads"], K=args.get("K", 3))).eval()
    _load(attn, state, {"lamb": "filter.lamb"})
    return {"y": attn(inputs["x"])}


def featscale_block(meta: dict, state: dict[str, torch.Tensor], inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Released FeatScale ``Block`` (LayerNorm eps 1e-5, GELU MLP, no layer scale), which adds the terms twice."""
    args = meta["args"]
    dim = args["dim"]
    found = re.search(r"eps=([0-9.eE+-]+)", args.get("norm", ""))
    eps = float(found.group(1)) if found else 1e-5  # torch's LayerNorm default, which the released Block uses
    hidden = int(dim * args.get("mlp_ratio", 4))
    block = FreqBlock(
        attn=_attention(meta, None),
        mlp=Mlp(dim, hidden, act_layer=nn.GELU),
        norm1=nn.LayerNorm(dim, eps=eps),
        norm2=nn.LayerNorm(dim, eps=eps),
        feat_scale=FeatScale(dim, double_add=True),
    ).eval()
    _load(block, state, {"lamb1": "feat_scale.lamb1", "lamb2": "feat_scale.lamb2"})
    return {"y": block(inputs["x"])}
