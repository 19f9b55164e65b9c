"""Builders for the FDAM fixtures (released ``mmcv_custom/deit_fdam.py``): each builds the freqkit
module from the fixture metadata, loads the released state dict through the released-key mapping
(``freqkit.models.fdam_vit.remap_released_keys`` / ``load_fdam_checkpoint``) and runs the inputs."""

from __future__ import annotations

import re

import torch
from torch import nn

from freqkit.layers import Attention, AttInv, FreqScale, set_grid
from freqkit.models.fdam_vit import FdamViTDense, build_fdam_block, load_fdam_checkpoint, remap_released_keys


def _layer_norm(spec: str):
    """'LayerNorm(eps=1e-6)' -> a LayerNorm factory with that eps."""
    m = re.fullmatch(r"LayerNorm\(eps=([0-9.eE+-]+)\)", spec.replace(" ", ""))
    if m is None:
        raise ValueError(f"unsupported norm {spec!r} in fixture metadata")
    eps = float(m.group(1))
    return lambda dim: nn.LayerNorm(dim, eps=eps)


def _load(module: nn.Module, state: dict[str, torch.Tensor]) -> nn.Module:
    module.load_state_dict(remap_released_keys(state), strict=True)
    return module.eval()


def attinv(meta: dict, state: dict, inputs: dict) -> dict:
    a = meta["args"]
    m = Attention(a["dim"], a["num_heads"], qkv_bias=a.get("qkv_bias", False), filter=AttInv(a["dim"], a["num_heads"]))
    return {"y": _load(m, state)(inputs["x"])}


def freqscale(meta: dict, state: dict, inputs: dict) -> dict:
    a = meta["args"]
    if a.get("act", "StarReLU") != "StarReLU":
        raise ValueError(f"unsupported routing activation {a['act']!r}")
    m = FreqScale(
        a["dim"],
        mode="group",
        num_filters=a["num_filters"],
        groups=a["group"],
        size=a["size"],
        reduction=round(1 / a["reweight_expansion_ratio"]),
    )
    return {"y": _load(m, state)(inputs["x"])}


def block(meta: dict, state: dict, inputs: dict) -> dict:
    a = meta["args"]
    m = build_fdam_block(
        a["dim"],
        a["num_heads"],
        qkv_bias=a.get("qkv_bias", False),
        init_values=a.get("init_values", 1e-4),
        norm_layer=_layer_norm(a["norm"]),
    )
    _load(m, state)
    set_grid(m, (meta["H"], meta["W"]), 0)
    return {"y": m(inputs["x"])}


def backbone(meta: dict, state: dict, inputs: dict) -> dict:
    a = meta["args"]
    if a.get("use_cls_token", False) or a.get("norm", "LayerNorm(eps=1e-6)").replace(" ", "") != "LayerNorm(eps=1e-6)":
        raise ValueError(f"unsupported backbone arguments {a}")
    m = FdamViTDense(
        img_size=a["img_size"],
        patch_size=a["patch_size"],
        embed_dim=a["embed_dim"],
        depth=a["depth"],
        num_heads=a["num_heads"],
        qkv_bias=a.get("qkv_bias", False),
        init_scale=a.get("init_scale", 1e-4),
        block_indices=a["out_indices"],
        neck=False,
    )
    load_fdam_checkpoint(m, state)
    m.eval()
    out = {}
    for name, x in sorted(inputs.items()):
        for j, y in enumerate(m.forward_intermediates(x, intermediates_only=True)):
            out[f"{name}_y{j}"] = y
    return out
