"""``convert``: retrofit a timm ViT-family model in place with freqkit's spectral methods.

Every existing weight is kept (modules are shared, not copied) and each method starts at (or
within float rounding of) the identity, so a converted pretrained model gives the same output
until it is fine-tuned.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable, Optional, Sequence, Union

from torch import nn

from freqkit.errors import FreqkitError
from freqkit.layers.block import FreqBlock, set_grid

__all__ = ["convert", "METHODS", "install_grid_hook"]

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


class _GridHook:
    """Forward pre-hook of ``model.patch_embed`` that tells the model's FreqBlocks the token grid.

    Why a hook: timm's ``VisionTransformer.forward_features`` / ``forward_intermediates`` call the
    blocks as ``self.blocks(x)`` / ``blk(x)``, with no way to pass the grid, and a converted model
    must stay a timm model (its methods, pretrained loading, feature wrappers). The hook stores the
    grid on the blocks right before they run; freqkit's own models pass it to each block instead.
    Under torch.fx it runs at trace time, so the grid of the traced input size is baked into the
    graph (timm's fixed-size ViTs trace that way too).

    A picklable object rather than a closure: ``copy.deepcopy`` (EMA copies) maps ``self.model``
    to the copy, so a copied model sets its own blocks' grid, and ``torch.save(model)`` works.
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model

    def __call__(self, module: nn.Module, args: tuple) -> None:
        img = args[0]
        if getattr(module, "dynamic_img_size", False) or getattr(self.model, "dynamic_img_size", False):
            grid = module.dynamic_feat_size(img.shape[-2:])
        else:
            grid = module.grid_size
        set_grid(self.model, grid, int(getattr(self.model, "num_prefix_tokens", 0)))


def install_grid_hook(model: nn.Module) -> None:
    """Before each forward of ``model.patch_embed``, tell the model's FreqBlocks the token grid."""
    if getattr(model, "_freqkit_grid_hook", False):
        return
    model.patch_embed.register_forward_pre_hook(_GridHook(model))
    model._freqkit_grid_hook = True


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
    install_grid_hook(model)
    return model
