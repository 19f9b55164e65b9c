"""``convert``: retrofit a timm ViT-family model in place with freqkit's spectral methods.

Every existing weight is kept (modules are shared, not copied) and each method starts at (or
within float rounding of) the identity, so a converted pretrained model gives the same output
until it is fine-tuned. The model becomes an instance of a subclass of its timm class
(:class:`GridPassingViT`) whose forwards pass the token grid to each converted block.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Optional, Sequence, Union

import torch
from timm.models import checkpoint
from timm.models._features import feature_take_indices
from timm.models.deit import VisionTransformerDistilled
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from freqkit.errors import FreqkitError
from freqkit.layers.block import FreqBlock

__all__ = ["convert", "METHODS", "GridPassingViT", "FreqVisionTransformer", "FreqVisionTransformerDistilled"]

SUPPORTED_FAMILIES = "timm VisionTransformer models: vit_*, deit_* (distilled too), deit3_*"

# method -> (slots it fills, factory). A factory takes (dim, num_heads, options) and returns
# {slot: module}; slots: "attn_filter", "feat_scale", "freq_scale_1", "freq_scale_2".


def _attinv(dim: int, heads: int, opts: dict) -> dict:
    from freqkit.layers.attinv import AttInv

    # retrofits start exactly at the identity (the released 1e-5 gammas move logits ~1e-4 relative);
    # gradients still reach the gammas at 0, so training behaves as with a zero-init LayerScale
    opts.setdefault("init_value", 0.0)
    return {"attn_filter": AttInv(dim, heads, **opts)}


def _freqscale(dim: int, heads: int, opts: dict) -> dict:
    from freqkit.layers.freqscale import FreqScale

    opts.setdefault("init_std", 0.0)  # exact identity at init, as for AttInv above
    return {"freq_scale_1": FreqScale(dim, **opts), "freq_scale_2": FreqScale(dim, **opts)}


def _attnscale(dim: int, heads: int, opts: dict) -> dict:
    from freqkit.layers.attnscale import AttnScale

    return {"attn_filter": AttnScale(heads, **opts)}


def _featscale(dim: int, heads: int, opts: dict) -> dict:
    from freqkit.layers.featscale import FeatScale

    return {"feat_scale": FeatScale(dim, **opts)}


def _gfsa(dim: int, heads: int, opts: dict) -> dict:
    from freqkit.layers.gfsa import GFSA

    return {"attn_filter": GFSA(heads, **opts)}


# method -> list of (factory, option prefix); options are passed as ``<prefix>_<name>=value``
METHODS: dict[str, list[tuple[Callable[[int, int, dict], dict], str]]] = {
    "attinv": [(_attinv, "attinv")],
    "freqscale": [(_freqscale, "freqscale")],
    "fdam": [(_attinv, "attinv"), (_freqscale, "freqscale")],
    "attnscale": [(_attnscale, "attnscale")],
    "featscale": [(_featscale, "featscale")],
    "gfsa": [(_gfsa, "gfsa")],
}


def _split_options(options: dict[str, Any], prefixes: set[str]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {p: {} for p in prefixes}
    for key, value in options.items():
        prefix, _, name = key.partition("_")
        if prefix not in prefixes or not name:
            raise FreqkitError(
                f"convert: unknown option {key!r} for these methods; options are named <method>_<argument>, "
                f"e.g. freqscale_mode='dynamic' (prefixes here: {sorted(prefixes)})"
            )
        out[prefix][name] = value
    return out


def _timm_vit_blocks(model: nn.Module) -> nn.Sequential:
    from timm.models.vision_transformer import VisionTransformer

    if not isinstance(model, VisionTransformer) or not isinstance(getattr(model, "blocks", None), nn.Sequential):
        raise FreqkitError(f"convert: {type(model).__name__} is not supported; supported are {SUPPORTED_FAMILIES}")
    return model.blocks


class GridPassingViT:
    """Mixin for a converted timm ViT: ``forward_features`` / ``forward_intermediates`` pass the token grid to each FreqBlock.

    Why: timm's ViT calls its blocks as ``self.blocks(x)`` / ``blk(x)``, so a FreqScale inside a block
    would not know the (H, W) grid of its tokens. These two methods are timm's (same steps, same
    outputs), except that each FreqBlock is called as ``blk(x, grid_size=(H, W), num_prefix_tokens=p)``,
    the grid coming from the patch embedding (its fixed ``grid_size``, or the input's size with
    ``dynamic_img_size``). Everything else (weights, pretrained loading, heads, feature wrappers) is the
    timm class's own.
    """

    def _grid_kwargs(self, images: torch.Tensor) -> dict[str, Any]:
        pe = self.patch_embed
        grid = pe.dynamic_feat_size(images.shape[-2:]) if self.dynamic_img_size else pe.grid_size
        return {"grid_size": grid, "num_prefix_tokens": self.num_prefix_tokens}

    def _block(
        self, blk: nn.Module, x: torch.Tensor, grid: dict[str, Any], attn_mask: Optional[torch.Tensor], is_causal: bool
    ) -> torch.Tensor:
        kw = grid if isinstance(blk, FreqBlock) else {}  # blocks left unconverted are timm's and take no grid
        if attn_mask is not None or is_causal:
            return blk(x, attn_mask=attn_mask, is_causal=is_causal, **kw)
        if self.grad_checkpointing and not torch.jit.is_scripting():
            return checkpoint(blk, x, **kw)
        return blk(x, **kw)

    def _embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm_pre(self.patch_drop(self._pos_embed(self.patch_embed(x))))

    def forward_features(
        self, x: torch.Tensor, attn_mask: Optional[torch.Tensor] = None, is_causal: bool = False
    ) -> torch.Tensor:
        """Images (B, 3, H, W) -> normalized tokens (B, N, C), as timm's, each FreqBlock given the grid."""
        grid = self._grid_kwargs(x)
        x = self._embed(x)
        for blk in self.blocks:
            x = self._block(blk, x, grid, attn_mask, is_causal)
        return self.norm(x)

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: Optional[Union[int, list[int]]] = None,
        return_prefix_tokens: bool = False,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
        output_dict: bool = False,
        attn_mask: Optional[torch.Tensor] = None,
        is_causal: bool = False,
    ) -> Union[list[torch.Tensor], tuple[torch.Tensor, list[torch.Tensor]], dict[str, Any]]:
        """timm's ``forward_intermediates`` (block outputs at ``indices``, (B, C, h, w) or (B, N, C)), each FreqBlock given the grid."""
        if output_fmt not in ("NCHW", "NLC"):
            raise FreqkitError(f"output_fmt must be 'NCHW' or 'NLC', got {output_fmt!r}")
        take, max_index = feature_take_indices(len(self.blocks), indices)
        b, _, height, width = x.shape
        grid = self._grid_kwargs(x)
        x = self._embed(x)
        feats = []
        blocks = self.blocks if torch.jit.is_scripting() or not stop_early else self.blocks[: max_index + 1]
        for i, blk in enumerate(blocks):
            x = self._block(blk, x, grid, attn_mask, is_causal)
            if i in take:
                feats.append(self.norm(x) if norm else x)
        p = self.num_prefix_tokens
        prefix = [y[:, :p] for y in feats] if p else None
        feats = [y[:, p:] for y in feats] if p else feats
        if output_fmt == "NCHW":
            h, w = self.patch_embed.dynamic_feat_size((height, width))
            feats = [y.reshape(b, h, w, -1).permute(0, 3, 1, 2).contiguous() for y in feats]
        if output_dict:
            out: dict[str, Any] = {"image_intermediates": feats}
            if prefix is not None and return_prefix_tokens:
                out["image_intermediates_prefix"] = prefix
            if not intermediates_only:
                out["image_features"] = self.norm(x)
            return out
        if not torch.jit.is_scripting() and return_prefix_tokens and prefix is not None:
            feats = list(zip(feats, prefix))
        if intermediates_only:
            return feats
        return self.norm(x), feats


class FreqVisionTransformer(GridPassingViT, VisionTransformer):
    """timm's VisionTransformer after :func:`convert`: its FreqBlocks get the token grid every forward."""


class FreqVisionTransformerDistilled(GridPassingViT, VisionTransformerDistilled):
    """timm's distilled DeiT after :func:`convert`: its FreqBlocks get the token grid every forward."""


_GRID_CLASSES: dict[type, type] = {
    VisionTransformer: FreqVisionTransformer,
    VisionTransformerDistilled: FreqVisionTransformerDistilled,
}


def _grid_passing(model: nn.Module) -> None:
    """Make ``model`` an instance of its class's grid-passing subclass (same attributes, modules and weights)."""
    cls = type(model)
    if isinstance(model, GridPassingViT):
        return
    if cls not in _GRID_CLASSES:  # another VisionTransformer subclass: the same mixin (copies, not pickles, of it work)
        _GRID_CLASSES[cls] = type(f"Freq{cls.__name__}", (GridPassingViT, cls), {"__module__": cls.__module__})
    model.__class__ = _GRID_CLASSES[cls]


def convert(
    model: nn.Module,
    method: Union[str, Sequence[str]],
    *,
    blocks: Optional[Iterable[int]] = None,
    **options: Any,
) -> nn.Module:
    """Retrofit a timm ViT (B, 3, H, W) -> logits in place with ``method`` and return it.

    ``method`` is one of :data:`METHODS` or a list of them (e.g. ``["fdam", "featscale"]``);
    ``blocks`` picks the block indices to convert (default all); options are passed to the layers
    as ``<layer>_<argument>``, e.g. ``freqscale_mode="dynamic"``, ``gfsa_K=4``.
    """
    methods = [method] if isinstance(method, str) else list(method)
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise FreqkitError(f"convert: unknown method {unknown or methods}; choose from {sorted(METHODS)}")
    vit_blocks = _timm_vit_blocks(model)
    factories = [f for m in methods for f in METHODS[m]]
    prefixes = {p for _, p in factories}
    if len(prefixes) != len(factories):
        raise FreqkitError(f"convert: methods {methods} repeat a component; list each method once")
    opts = _split_options(options, prefixes)
    indices = list(range(len(vit_blocks))) if blocks is None else sorted(set(int(i) for i in blocks))
    bad = [i for i in indices if not 0 <= i < len(vit_blocks)]
    if bad:
        raise FreqkitError(f"convert: block indices {bad} out of range for a model with {len(vit_blocks)} blocks")

    for i in indices:
        old = vit_blocks[i]
        dim, heads = old.attn.qkv.in_features, old.attn.num_heads
        slots: dict[str, nn.Module] = {}
        for factory, prefix in factories:
            for slot, module in factory(dim, heads, dict(opts[prefix])).items():
                if slot in slots:
                    raise FreqkitError(
                        f"convert: methods {methods} both need the {slot.replace('_', ' ')}; they cannot be combined "
                        "(AttInv, AttnScale and GFSA each replace the attention filter: pick one)"
                    )
                slots[slot] = module
        for module in slots.values():
            # layers that treat prefix tokens (CLS, registers) specially learn their count here
            if hasattr(module, "num_prefix_tokens"):
                module.num_prefix_tokens = int(getattr(model, "num_prefix_tokens", 0))
        new = FreqBlock.from_timm(old, **slots)
        ref = next(old.parameters())
        new.to(device=ref.device, dtype=ref.dtype)
        vit_blocks[i] = new
    _grid_passing(model)
    return model
