"""Capture per-layer tokens, maps and attention of a model with hooks, without changing its output.

``capture(model, images)`` runs one forward pass with forward hooks on

- every block of a ViT-family model (anything with ``patch_embed`` and ``blocks``: timm
  ``VisionTransformer`` and its distilled / register / ``dynamic_img_size`` variants, and models
  built from ``freqkit.layers.FreqBlock``): the block's output tokens (B, N, C) with the spatial grid
  (H, W) and the number of prefix tokens (CLS, distillation, registers);
- every stage of a convolutional / MetaFormer model (``stages.*``, ``layers.*``, ``network.*``,
  ResNet's ``layer1..4``): the stage output map (B, C, H, W);
- optionally (``attention=True``) every block's attention module: the softmax attention
  (B, heads, N, N), the values V and the attention output, recomputed inside a hook from the layer's
  own ``qkv``, ``q_norm``, ``k_norm`` and ``scale``. The model keeps its fused attention path, so
  its output is bitwise the same as a plain forward pass.

Hugging Face ``transformers`` ViT-family models (ViT, DeiT, DINOv2, with or without registers) work
too when that optional package is installed: their encoder layers are captured with the same hooks,
the grid comes from ``config.patch_size`` and the image size, the prefix tokens (CLS, distillation,
registers) are the rest, and attention maps come from ``output_attentions`` (that pass runs the
eager attention path, restored after).

Hooks are removed when the pass ends, also when it raises.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import torch
from torch import nn

from freqkit.errors import FreqkitError
from freqkit.layers.attention import additive_mask
from freqkit.spectral import infer_grid, split_tokens

__all__ = ["capture", "Capture", "LayerCapture", "default_layers", "token_layout", "effective_receptive_field"]

# containers whose children are the "stages" of a hierarchical model, in the order we look for them
_STAGE_CONTAINERS = ("stages", "layers", "network")
_RESNET_STAGE = re.compile(r"^layer\d+$")


@dataclass
class LayerCapture:
    """One captured layer: tokens (B, N, C) or a map (B, C, H, W), its grid and, when asked, attention.

    ``attn`` is the softmax attention (B, heads, N, N); ``v`` the values and ``attn_out`` the
    attention output before the output projection, both heads merged to (B, N, heads * d). With a
    freqkit attention filter installed (AttInv, AttnScale, GFSA) ``attn_out`` is the filtered output,
    so the global response measures the whole attention operator; ``attn`` stays the plain softmax.
    """

    name: str
    grid_size: tuple[int, int]
    num_prefix_tokens: int = 0
    tokens: Optional[torch.Tensor] = None
    map: Optional[torch.Tensor] = None
    attn: Optional[torch.Tensor] = None
    v: Optional[torch.Tensor] = None
    attn_out: Optional[torch.Tensor] = None

    @property
    def is_tokens(self) -> bool:
        """True for a token layer (ViT block), False for a map layer (conv stage)."""
        return self.tokens is not None

    def spatial_map(self) -> torch.Tensor:
        """The layer's spatial features as a map (B, C, H, W); prefix tokens dropped."""
        if self.map is not None:
            return self.map
        return split_tokens(self.tokens, self.grid_size)[1]

    def spatial_tokens(self) -> torch.Tensor:
        """The layer's spatial features as tokens (B, H*W, C); prefix tokens dropped."""
        if self.map is not None:
            return self.map.flatten(2).transpose(1, 2)
        return self.tokens[:, self.num_prefix_tokens :]

    def v_map(self) -> torch.Tensor:
        """The value map V (B, heads * d, H, W) of the attention layer (spatial tokens only)."""
        if self.v is None:
            raise FreqkitError(f"layer {self.name!r} has no captured values; call capture(..., attention=True)")
        return split_tokens(self.v, self.grid_size)[1]

    def attn_out_map(self) -> torch.Tensor:
        """The attention output map (B, heads * d, H, W) before the projection (spatial tokens only)."""
        if self.attn_out is None:
            raise FreqkitError(f"layer {self.name!r} has no captured attention output; call capture(..., attention=True)")
        return split_tokens(self.attn_out, self.grid_size)[1]


@dataclass
class Capture:
    """The result of :func:`capture`: the captured layers in forward order and the model's output."""

    layers: list[LayerCapture] = field(default_factory=list)
    output: Any = None

    @property
    def names(self) -> list[str]:
        """Names of the captured layers, in forward order."""
        return [layer.name for layer in self.layers]

    def __len__(self) -> int:
        return len(self.layers)

    def __getitem__(self, key: int | str) -> LayerCapture:
        if isinstance(key, str):
            for layer in self.layers:
                if layer.name == key:
                    return layer
            raise KeyError(f"no captured layer named {key!r}; captured: {self.names}")
        return self.layers[key]


def _hf_layers(model: nn.Module) -> Optional[list[str]]:
    """Encoder layer names of a Hugging Face ViT-family model (``*.layers.i`` or ``*encoder.layer.i``), else None."""
    if (
        not type(model).__module__.startswith("transformers.")
        or getattr(getattr(model, "config", None), "patch_size", None) is None
    ):
        return None
    for name, mod in model.named_modules():
        if isinstance(mod, nn.ModuleList) and (name == "layers" or name.endswith((".layers", "encoder.layer"))) and len(mod) > 0:
            return [f"{name}.{i}" for i in range(len(mod))]
    return None


def _hf_geometry(model: nn.Module, image_hw: tuple[int, int], num_tokens: int) -> tuple[tuple[int, int], int]:
    """(grid, prefix tokens) of a Hugging Face ViT's token sequence of ``num_tokens`` for images of ``image_hw``."""
    ps = model.config.patch_size
    ph, pw = (ps, ps) if isinstance(ps, int) else (int(ps[0]), int(ps[1]))
    grid = (image_hw[0] // ph, image_hw[1] // pw)
    return grid, num_tokens - grid[0] * grid[1]


def token_layout(model: nn.Module) -> bool:
    """True when the model is a ViT-family token model (``patch_embed`` + ``blocks``)."""
    return hasattr(model, "patch_embed") and isinstance(getattr(model, "blocks", None), (nn.Sequential, nn.ModuleList))


def default_layers(model: nn.Module) -> list[str]:
    """Module names captured by default: ``blocks.*`` of a ViT (a Hugging Face ViT's encoder layers), else the stages of a hierarchical model."""
    hf = _hf_layers(model)
    if hf is not None:
        return hf
    if token_layout(model):
        return [f"blocks.{i}" for i in range(len(model.blocks))]
    for container in _STAGE_CONTAINERS:
        mod = getattr(model, container, None)
        if isinstance(mod, (nn.Sequential, nn.ModuleList)) and len(mod) > 0:
            return [f"{container}.{name}" for name, _ in mod.named_children()]
    resnet = [name for name, _ in model.named_children() if _RESNET_STAGE.match(name)]
    if resnet:
        return resnet
    blocks = getattr(model, "blocks", None)
    if isinstance(blocks, (nn.Sequential, nn.ModuleList)) and len(blocks) > 0:
        return [f"blocks.{name}" for name, _ in blocks.named_children()]
    raise FreqkitError(
        f"cannot find the layers of {type(model).__name__} (no blocks / stages / layers / network children); "
        "pass layers=['module.name', ...] with the names from model.named_modules()"
    )


def _attention_of(block: nn.Module) -> Optional[nn.Module]:
    attn = getattr(block, "attn", None)
    if attn is not None and all(hasattr(attn, a) for a in ("qkv", "num_heads", "scale")):
        return attn
    return None


def _recompute_attention(attn: nn.Module, x: torch.Tensor, attn_mask: Optional[torch.Tensor], is_causal: bool):
    """softmax(q k^T * scale + mask) (B, heads, N, N), A V and V (B, heads, N, d) from the layer's own weights."""
    b, n, _ = x.shape
    heads = int(attn.num_heads)
    head_dim = int(getattr(attn, "head_dim", attn.qkv.out_features // (3 * heads)))
    q, k, v = attn.qkv(x).reshape(b, n, 3, heads, head_dim).permute(2, 0, 3, 1, 4).unbind(0)
    q_norm = getattr(attn, "q_norm", None)
    k_norm = getattr(attn, "k_norm", None)
    if q_norm is not None:
        q = q_norm(q)
    if k_norm is not None:
        k = k_norm(k)
    logits = (q * attn.scale) @ k.transpose(-2, -1)
    bias = additive_mask(attn_mask, is_causal, n, logits)
    if bias is not None:
        logits = logits + bias
    probs = logits.softmax(dim=-1)
    return probs, probs @ v, v


def _merge_heads(t: torch.Tensor) -> torch.Tensor:
    """(B, heads, N, d) -> (B, N, heads * d)."""
    b, h, n, d = t.shape
    return t.transpose(1, 2).reshape(b, n, h * d)


def _grid_of_tokens(model: nn.Module, image_hw: tuple[int, int], patch_out: Optional[torch.Tensor]) -> tuple[int, int]:
    if patch_out is not None and patch_out.ndim == 4:
        # dynamic_img_size ViTs keep the patch embedding as (B, H, W, C)
        return int(patch_out.shape[1]), int(patch_out.shape[2])
    pe = model.patch_embed
    if hasattr(pe, "dynamic_feat_size"):
        return tuple(int(g) for g in pe.dynamic_feat_size(image_hw))
    return tuple(int(g) for g in pe.grid_size)


def _nhwc(module: nn.Module) -> bool:
    return str(getattr(module, "output_fmt", "NCHW")).upper().endswith("NHWC")


def _as_map(out: torch.Tensor, channels_last: bool) -> torch.Tensor:
    return out.permute(0, 3, 1, 2) if channels_last else out


def _record_output(store: dict[str, torch.Tensor], name: str):
    """A forward hook that keeps a detached copy of a layer's (first) output under ``name``."""

    def hook(module: nn.Module, args: tuple, out: Any) -> None:
        t = out[0] if isinstance(out, (tuple, list)) else out
        # a clone: later layers of some models work in place on their input
        store[name] = t.detach().clone()

    return hook


def capture(
    model: nn.Module,
    images: torch.Tensor,
    *,
    attention: bool = False,
    layers: Optional[Sequence[str]] = None,
) -> Capture:
    """Run ``model(images)`` (B, 3, H, W) once and capture each layer's output (see module docs).

    ``layers`` names the modules to capture (default :func:`default_layers`); with ``attention``
    each captured ViT block's attention module also gives ``attn`` (B, heads, N, N), ``v`` and
    ``attn_out`` (B, N, heads * d). Runs under ``torch.no_grad``; the model's mode is left as is.
    """
    if not isinstance(images, torch.Tensor) or images.ndim != 4:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise FreqkitError(f"capture expects images of shape (B, 3, H, W), got {shape}; add a batch dimension with x[None]")
    names = list(default_layers(model) if layers is None else layers)
    if not names:
        raise FreqkitError("capture: no layers to capture; pass layers=None for the default layers")
    modules = dict(model.named_modules())
    unknown = [n for n in names if n not in modules]
    if unknown:
        raise FreqkitError(
            f"capture: model {type(model).__name__} has no module named {unknown}; use names from model.named_modules(), "
            f"e.g. {default_layers(model)[:3]}"
        )
    image_hw = (int(images.shape[-2]), int(images.shape[-1]))
    if _hf_layers(model) is not None:
        return _capture_hf(model, images, names, modules, attention)
    is_vit = token_layout(model)
    num_prefix = int(getattr(model, "num_prefix_tokens", 0)) if is_vit else 0
    channels_last = _nhwc(model)

    state: dict[str, Any] = {"patch_out": None}
    outputs: dict[str, torch.Tensor] = {}
    attn_store: dict[str, dict[str, torch.Tensor]] = {}
    filter_out: dict[str, torch.Tensor] = {}
    handles: list[Any] = []

    def layer_hook(name: str):
        return _record_output(outputs, name)

    def attn_hook(name: str):
        def hook(module: nn.Module, args: tuple, kwargs: dict, out: Any) -> None:
            x = args[0] if args else kwargs["x"]
            mask = kwargs.get("attn_mask", args[1] if len(args) > 1 else None)
            causal = bool(kwargs.get("is_causal", args[2] if len(args) > 2 else False))
            probs, av, v = _recompute_attention(module, x, mask, causal)
            filtered = filter_out.pop(name, None)
            attn_store[name] = {
                "attn": probs,
                "v": _merge_heads(v),
                "attn_out": _merge_heads(filtered if filtered is not None else av),
            }

        return hook

    def filter_hook(name: str):
        def hook(module: nn.Module, args: tuple, out: torch.Tensor) -> None:
            filter_out[name] = out.detach()

        return hook

    def patch_hook(module: nn.Module, args: tuple, out: Any) -> None:
        state["patch_out"] = out if isinstance(out, torch.Tensor) else None

    try:
        if is_vit:
            handles.append(model.patch_embed.register_forward_hook(patch_hook))
        for name in names:
            mod = modules[name]
            handles.append(mod.register_forward_hook(layer_hook(name)))
            if attention:
                attn = _attention_of(mod)
                if attn is None:
                    if is_vit:
                        raise FreqkitError(
                            f"capture(attention=True): layer {name!r} ({type(mod).__name__}) has no attention module with "
                            "qkv / num_heads / scale; capture without attention, or choose ViT blocks"
                        )
                    continue
                if getattr(attn, "qkv", None) is None or getattr(attn, "gate", None) is not None:
                    raise FreqkitError(
                        f"capture(attention=True): the attention of {name!r} has a layout the probe cannot recompute "
                        "(no fused qkv, or gated); capture without attention"
                    )
                handles.append(attn.register_forward_hook(attn_hook(name), with_kwargs=True))
                flt = getattr(attn, "filter", None)
                if isinstance(flt, nn.Module):
                    handles.append(flt.register_forward_hook(filter_hook(name)))
        with torch.no_grad():
            output = model(images)
    finally:
        for h in handles:
            h.remove()

    missing = [n for n in names if n not in outputs]
    if missing:
        raise FreqkitError(f"capture: layers {missing} did not run in the forward pass; pick layers on the model's forward path")
    captured: list[LayerCapture] = []
    grid_tokens = _grid_of_tokens(model, image_hw, state["patch_out"]) if is_vit else None
    for name in names:
        out = outputs[name]
        if out.ndim == 3:
            grid = grid_tokens
            if grid is None or grid[0] * grid[1] != out.shape[1] - num_prefix:
                grid = infer_grid(out.shape[1], num_prefix)
            layer = LayerCapture(name=name, grid_size=(int(grid[0]), int(grid[1])), num_prefix_tokens=num_prefix, tokens=out)
            if name in attn_store:
                layer.attn = attn_store[name]["attn"]
                layer.v = attn_store[name]["v"]
                layer.attn_out = attn_store[name]["attn_out"]
        elif out.ndim == 4:
            nhwc = channels_last or (is_vit and modules[name] is model.patch_embed and _nhwc(model.patch_embed))
            m = _as_map(out, nhwc)
            layer = LayerCapture(name=name, grid_size=(int(m.shape[-2]), int(m.shape[-1])), map=m)
        else:
            raise FreqkitError(
                f"capture: layer {name!r} returned shape {tuple(out.shape)}; only tokens (B, N, C) and maps (B, C, H, W) "
                "can be analysed, pick other layers"
            )
        captured.append(layer)
    return Capture(layers=captured, output=output)


def _capture_hf(
    model: nn.Module, images: torch.Tensor, names: list[str], modules: dict[str, nn.Module], attention: bool
) -> Capture:
    """:func:`capture` for a Hugging Face ViT-family model (see the module docs)."""
    layers = _hf_layers(model) or []
    outputs: dict[str, torch.Tensor] = {}
    values: dict[str, torch.Tensor] = {}
    handles: list[Any] = []

    def layer_hook(name: str):
        return _record_output(outputs, name)

    def value_hook(name: str):
        def hook(module: nn.Module, args: tuple, out: torch.Tensor) -> None:
            values[name] = out.detach()

        return hook

    for name in names:
        handles.append(modules[name].register_forward_hook(layer_hook(name)))
        if attention and name in layers:
            # the value projection (``v_proj``, or ``attention.value`` in older transformers) gives V for the global response
            proj = next(
                (
                    m
                    for n, m in modules[name].named_modules()
                    if n.endswith(("v_proj", "attention.value")) and isinstance(m, nn.Linear)
                ),
                None,
            )
            if proj is not None:
                handles.append(proj.register_forward_hook(value_hook(name)))
    setter = getattr(model, "set_attn_implementation", None)
    before = getattr(model.config, "_attn_implementation", None)
    try:
        if attention:
            if setter is not None:
                setter("eager")
            else:  # pragma: no cover - older transformers
                model.config._attn_implementation = "eager"
        with torch.no_grad():
            output = model(pixel_values=images, output_attentions=bool(attention))
    finally:
        for h in handles:
            h.remove()
        if attention and before is not None and before != "eager":
            if setter is not None:
                setter(before)
            else:  # pragma: no cover
                model.config._attn_implementation = before
    attns = list(getattr(output, "attentions", None) or []) if attention else []
    if attention and len(attns) != len(layers):
        raise FreqkitError(
            f"capture(attention=True): {type(model).__name__} returned {len(attns)} attention maps for {len(layers)} layers; capture without attention"
        )
    image_hw = (int(images.shape[-2]), int(images.shape[-1]))
    captured = []
    for name in names:
        if name not in outputs:
            raise FreqkitError(
                f"capture: layers {[name]} did not run in the forward pass; pick layers on the model's forward path"
            )
        out = outputs[name]
        if out.ndim != 3:
            raise FreqkitError(
                f"capture: layer {name!r} returned shape {tuple(out.shape)}; pick encoder layers (tokens (B, N, C))"
            )
        grid, prefix = _hf_geometry(model, image_hw, out.shape[1])
        layer = LayerCapture(name=name, grid_size=grid, num_prefix_tokens=prefix, tokens=out)
        if attention and name in layers:
            a = attns[layers.index(name)].detach()
            layer.attn = a
            if name in values:
                b, heads, n, _ = a.shape
                v = values[name].view(b, n, heads, -1).transpose(1, 2)
                layer.v = _merge_heads(v)
                layer.attn_out = _merge_heads(a.to(v.dtype) @ v)
        captured.append(layer)
    return Capture(layers=captured, output=output)


def _center_unit(out: torch.Tensor, name: str, grid: Optional[tuple[int, int]], num_prefix: int, nhwc: bool) -> torch.Tensor:
    """Sum over batch and channels of the centre spatial unit of a layer output (tokens or map) -> scalar."""
    if out.ndim == 3:
        if grid is None or grid[0] * grid[1] != out.shape[1] - num_prefix:
            grid = infer_grid(out.shape[1], num_prefix)
        idx = num_prefix + (grid[0] // 2) * grid[1] + grid[1] // 2
        return out[:, idx].sum()
    if out.ndim == 4:
        m = _as_map(out, nhwc)
        return m[:, :, m.shape[-2] // 2, m.shape[-1] // 2].sum()
    raise FreqkitError(f"effective_receptive_field: layer {name!r} returned shape {tuple(out.shape)}; pick token or map layers")


def effective_receptive_field(
    model: nn.Module, images: torch.Tensor, layers: Optional[Sequence[str]] = None
) -> dict[str, torch.Tensor]:
    """Effective receptive field (Luo et al. 2016) of each layer on images (B, 3, H, W) -> {name: (H, W)}.

    The map is |d y_c / d x| summed over the input channels and averaged over the images, where y_c
    is the centre spatial unit of the layer's output (summed over its channels; prefix tokens are not
    spatial). One backward pass per layer; the model runs as it is (call ``model.eval()`` first, so
    that images do not interact through batch statistics) and its parameters get no gradients.
    """
    if not isinstance(images, torch.Tensor) or images.ndim != 4:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise FreqkitError(f"effective_receptive_field expects images of shape (B, 3, H, W), got {shape}")
    names = list(default_layers(model) if layers is None else layers)
    modules = dict(model.named_modules())
    unknown = [n for n in names if n not in modules]
    if unknown or not names:
        raise FreqkitError(
            f"effective_receptive_field: model {type(model).__name__} has no module named {unknown}; use names from model.named_modules()"
        )
    is_hf = _hf_layers(model) is not None
    is_vit = token_layout(model) and not is_hf
    num_prefix = int(getattr(model, "num_prefix_tokens", 0)) if is_vit else 0
    channels_last = _nhwc(model)
    outputs: dict[str, torch.Tensor] = {}
    state: dict[str, Any] = {"patch_out": None}

    def hook(name: str):
        def fn(module: nn.Module, args: tuple, out: Any) -> None:
            outputs[name] = out[0] if isinstance(out, (tuple, list)) else out

        return fn

    def patch_hook(module: nn.Module, args: tuple, out: Any) -> None:
        state["patch_out"] = out if isinstance(out, torch.Tensor) else None

    x = images.detach().clone().requires_grad_(True)
    handles = [modules[n].register_forward_hook(hook(n)) for n in names]
    if is_vit:
        handles.append(model.patch_embed.register_forward_hook(patch_hook))
    try:
        with torch.enable_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    image_hw = (int(x.shape[-2]), int(x.shape[-1]))
    grid = _grid_of_tokens(model, image_hw, state["patch_out"]) if is_vit else None
    result: dict[str, torch.Tensor] = {}
    for i, name in enumerate(names):
        if name not in outputs:
            raise FreqkitError(f"effective_receptive_field: layer {name!r} did not run in the forward pass")
        out, prefix = outputs[name], num_prefix
        if is_hf and out.ndim == 3:
            grid, prefix = _hf_geometry(model, image_hw, out.shape[1])
        target = _center_unit(out, name, grid, prefix, channels_last)
        (grad,) = torch.autograd.grad(target, x, retain_graph=i < len(names) - 1)
        result[name] = grad.abs().sum(dim=1).mean(dim=0).detach()
    return result
