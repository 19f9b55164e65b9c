"""The model vocabulary: ``BASE[+METHOD...]`` -> a classifier or a segmenter (train, compare, analyze and create share it).

* ``BASE`` is a preset below or any timm / freqkit model name (``timm.list_models()``: e.g.
  ``deit_small_patch16_224``, ``deit_small_fdam``, ``spanet_small``, ``resnet18``).
* Each ``+METHOD`` retrofits the base with ``freqkit.convert`` (fdam, attinv, freqscale, attnscale,
  featscale, gfsa; ViT-family bases only): ``vit_mini+fdam``, ``vit_mini+attnscale+featscale``.

Segmentation wraps the (converted) backbone in :func:`freqkit.models.segmentation.create_segmentation_model`
(UPerNet head; ViTs through a stride 4-32 neck); classification keeps the model's own head.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Optional

from torch import nn

from freqkit.errors import FreqkitError

__all__ = [
    "MODEL_PRESETS",
    "ModelSpec",
    "parse_model_spec",
    "build_model",
    "init_backbone",
    "InitReport",
    "drop_path_rates",
    "DROP_PATH_SCHEDULES",
]

# name -> (timm architecture, keyword overrides, description): small ViTs for CPU experiments on 32-64 px images, and the
# released DeiT-III baseline backbone of the ADE20K recipes.
MODEL_PRESETS: dict[str, tuple[str, dict[str, Any], str]] = {
    "vit_mini": (
        "vit_tiny_patch16_224",
        dict(embed_dim=128, depth=4, num_heads=4, patch_size=8, img_size=64),
        "ViT, dim 128, depth 4, 4 heads, patch 8 (0.8 M backbone parameters): the default of freqkit compare",
    ),
    "vit_mini_d8": (
        "vit_tiny_patch16_224",
        dict(embed_dim=128, depth=8, num_heads=4, patch_size=8, img_size=64),
        "vit_mini at depth 8 (1.6 M backbone parameters): the middle of the depth study",
    ),
    "vit_mini_d12": (
        "vit_tiny_patch16_224",
        dict(embed_dim=128, depth=12, num_heads=4, patch_size=8, img_size=64),
        "vit_mini at depth 12, DeiT's depth (2.4 M backbone parameters): the deep end of the depth study",
    ),
    "vit_micro": (
        "vit_tiny_patch16_224",
        dict(embed_dim=32, depth=4, num_heads=2, patch_size=8, mlp_ratio=2.0, img_size=32),
        "ViT, dim 32, depth 4, 2 heads, patch 8: for tests and smoke runs",
    ),
    "deit3_base_dense": (
        "fdam_vit_base_dense",
        dict(fdam=False),
        "the released DeiT-III-B dense backbone (LayerScale, no CLS token, position embedding resized every forward) "
        "without FDAM: the baseline of fdam_vit_base_dense",
    ),
}


@dataclass(frozen=True)
class ModelSpec:
    """A parsed model spec: timm architecture, overrides from a preset, freqkit methods to apply."""

    text: str
    arch: str
    kwargs: tuple[tuple[str, Any], ...]
    methods: tuple[str, ...]


def parse_model_spec(text: str) -> ModelSpec:
    """Parse ``BASE[+METHOD...]``; unknown bases or methods raise a FreqkitError naming the choices."""
    import timm

    from freqkit.models.convert import METHODS

    parts = [p.strip() for p in text.strip().split("+")]
    if not parts or not parts[0] or any(not p for p in parts):
        raise FreqkitError(f"bad model spec {text!r}; write BASE or BASE+METHOD, e.g. vit_mini+fdam")
    base, methods = parts[0], tuple(parts[1:])
    bad = [m for m in methods if m not in METHODS]
    if bad:
        raise FreqkitError(f"unknown method {bad[0]!r} in model spec {text!r}; methods: {', '.join(sorted(METHODS))}")
    if len(set(methods)) != len(methods):
        raise FreqkitError(f"model spec {text!r} repeats a method; list each once")
    if base in MODEL_PRESETS:
        arch, kwargs, _ = MODEL_PRESETS[base]
        return ModelSpec(text, arch, tuple(sorted(kwargs.items())), methods)
    if not timm.is_model(base):
        raise FreqkitError(
            f"unknown model {base!r} in {text!r}; use a preset ({', '.join(MODEL_PRESETS)}) or a timm / freqkit model name"
        )
    return ModelSpec(text, base, (), methods)


def _accepts(cls: type, name: str) -> bool:
    try:
        params = inspect.signature(cls.__init__).parameters
    except (TypeError, ValueError):
        return False
    return name in params


def build_model(
    spec: str | ModelSpec,
    task: str,
    num_classes: Optional[int],
    img_size: Optional[int | tuple[int, int]] = None,
    drop_path_rate: float = 0.0,
    head_channels: int = 64,
    head_norm: str = "group",
    head_dropout: float = 0.0,
    aux_channels: int = 0,
    aux_level: int = 2,
    neck: str = "pyramid",
    drop_path_schedule: str = "linear",
    head_init: str = "torch",
) -> nn.Module:
    """Build ``spec`` for ``task`` ('classification': (B, 3, H, W) -> (B, K); 'segmentation': -> (B, K, H, W)).

    ``num_classes`` None keeps the architecture's own class count (classification only); ``img_size`` is an int
    or (H, W).

    Segmentation ViTs take any image size that is a multiple of the patch (position embeddings are
    resampled per input), so evaluation can run on whole, non-square images. ``head_norm``, ``head_dropout``,
    ``aux_channels``, ``aux_level``, ``neck`` and ``head_init`` configure the segmenter (see ``create_segmentation_model``);
    ``drop_path_schedule`` spreads ``drop_path_rate`` over the blocks (:func:`drop_path_rates`).
    """
    import timm

    from freqkit.models.convert import convert
    from freqkit.models.segmentation import create_segmentation_model, is_vit, probe_model

    ms = spec if isinstance(spec, ModelSpec) else parse_model_spec(spec)
    if task not in ("classification", "segmentation"):
        raise FreqkitError(f"unknown task {task!r}; use classification or segmentation")
    kwargs = dict(ms.kwargs)
    probe = probe_model(ms.arch, **kwargs)
    vit = is_vit(probe)
    if img_size is not None and (vit or _accepts(type(probe), "img_size")):
        kwargs["img_size"] = tuple(int(v) for v in img_size) if isinstance(img_size, (tuple, list)) else int(img_size)
    # timm ViTs take it through **kwargs in subclasses (e.g. deit_small_fdam_patch16_224), so check the family, not the signature
    if drop_path_rate and (vit or _accepts(type(probe), "drop_path_rate")):
        kwargs["drop_path_rate"] = float(drop_path_rate)
    if ms.methods and not vit:
        raise FreqkitError(
            f"{ms.text}: methods {list(ms.methods)} retrofit timm ViT-family models, but {ms.arch} is {type(probe).__name__}; "
            "drop the +method or pick a ViT base"
        )
    if drop_path_schedule not in DROP_PATH_SCHEDULES:
        raise FreqkitError(f"unknown drop_path_schedule {drop_path_schedule!r}; use {' or '.join(DROP_PATH_SCHEDULES)}")
    if task == "classification":
        if num_classes is not None:
            kwargs["num_classes"] = num_classes
        model = timm.create_model(ms.arch, pretrained=False, **kwargs)
        if ms.methods:
            convert(model, list(ms.methods))
        return _spread_drop_path(model, drop_path_rate, drop_path_schedule)
    if num_classes is None:
        raise FreqkitError(f"{ms.text}: a segmenter needs num_classes; pass the class count of the data")
    head_kw = dict(
        head_channels=head_channels,
        head_norm=head_norm,
        head_dropout=head_dropout,
        aux_channels=aux_channels,
        aux_level=aux_level,
        neck=neck,
        head_init=head_init,
    )
    if vit:
        backbone = timm.create_model(ms.arch, pretrained=False, num_classes=0, dynamic_img_size=True, **kwargs)
        if ms.methods:
            convert(backbone, list(ms.methods))
        return _spread_drop_path(create_segmentation_model(backbone, num_classes, **head_kw), drop_path_rate, drop_path_schedule)
    return _spread_drop_path(
        create_segmentation_model(ms.arch, num_classes, **head_kw, **kwargs), drop_path_rate, drop_path_schedule
    )


DROP_PATH_SCHEDULES = ("linear", "uniform")


def drop_path_rates(depth: int, rate: float, schedule: str = "linear") -> list[float]:
    """Stochastic-depth rate of each of ``depth`` blocks: linear 0 -> rate (timm, mmsegmentation's ViT) or rate everywhere
    (the released FDAM / DeiT-III backbone)."""
    if schedule not in DROP_PATH_SCHEDULES:
        raise FreqkitError(f"unknown drop_path_schedule {schedule!r}; use {' or '.join(DROP_PATH_SCHEDULES)}")
    if schedule == "uniform":
        return [float(rate)] * depth
    import torch

    return [float(x) for x in torch.linspace(0, rate, depth, device="cpu")]


def _spread_drop_path(model: nn.Module, rate: float, schedule: str) -> nn.Module:
    """Set every ViT block's DropPath to :func:`drop_path_rates` (the models build the linear schedule themselves)."""
    if schedule == "linear" or not rate:
        return model
    from timm.layers import DropPath

    blocks = getattr(getattr(model, "encoder", model), "blocks", None)
    if blocks is None or not all(hasattr(b, "drop_path1") and hasattr(b, "drop_path2") for b in blocks):
        raise FreqkitError(
            f"drop_path_schedule={schedule!r} needs ViT blocks (drop_path1 / drop_path2); "
            f"{type(model).__name__} has none, use drop_path_schedule='linear'"
        )
    for block, r in zip(blocks, drop_path_rates(len(blocks), rate, schedule)):
        block.drop_path1, block.drop_path2 = DropPath(r), DropPath(r)
    return model


@dataclass(frozen=True)
class InitReport:
    """What :func:`init_backbone` loaded: tensors copied, backbone keys the file lacks, file keys the backbone lacks."""

    path: str
    loaded: int
    missing: tuple[str, ...]
    unexpected: tuple[str, ...]
    mismatched: tuple[str, ...]

    def summary(self) -> str:
        """One line naming the counts and the first keys of each kind."""

        def short(keys: tuple[str, ...]) -> str:
            return ", ".join(keys[:8]) + (f", ... ({len(keys) - 8} more)" if len(keys) > 8 else "")

        parts = [f"init: {self.loaded} tensors from {self.path}"]
        for what, keys in (
            ("missing", self.missing),
            ("unexpected", self.unexpected),
            ("wrong shape, kept the model's", self.mismatched),
        ):
            if keys:
                parts.append(f"{what} ({len(keys)}): {short(keys)}")
        return "; ".join(parts)


def init_backbone(model: nn.Module, path: str) -> InitReport:
    """Load a weights file (timm-style keys: ``.safetensors`` or a weights-only ``.pth``, e.g. DeiT / DeiT-III) into the
    backbone of ``model`` (a segmenter's ``encoder``, or the classifier itself), non-strictly.

    ViT position embeddings are resampled to the model's grid, the patch embedding adapted and DeiT-III
    layer-scale names mapped by timm's ViT checkpoint filter. Keys the file lacks (e.g. FDAM parameters) keep their initialization and keys
    the backbone lacks (the classifier head, the final norm a segmenter drops) are skipped; both are
    listed in the report. A file sharing no tensor with the backbone raises a FreqkitError.
    """
    import warnings

    from freqkit.models.checkpoint import load_checkpoint
    from freqkit.models.fdam_vit import FdamViTDense
    from freqkit.models.fdam_vit import checkpoint_filter_fn as dense_filter_fn
    from freqkit.models.segmentation import is_vit

    backbone = getattr(model, "encoder", model)
    filter_fn = None
    if isinstance(backbone, FdamViTDense):
        # DeiT / DeiT-III / released FDAM names, the position embedding resized (bicubic) to the model's grid
        filter_fn = dense_filter_fn
    elif is_vit(backbone):
        from functools import partial

        from timm.models.vision_transformer import checkpoint_filter_fn

        # adapt_layer_scale: the original DeiT-III files name layer scales gamma_1 / gamma_2 (timm: ls1.gamma / ls2.gamma)
        filter_fn = partial(checkpoint_filter_fn, adapt_layer_scale=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the report lists the wrong-shaped tensors
        res = load_checkpoint(backbone, path, filter_fn=filter_fn, strict=False)
    own = len(backbone.state_dict())
    loaded = own - len(res.missing) - len(res.mismatched)
    if loaded <= 0:
        raise FreqkitError(
            f"init: no tensor of {path} matches the backbone of {type(model).__name__} (its keys look like "
            f"{', '.join(list(res.unexpected)[:3])}); pass weights of the same architecture with timm-style keys"
        )
    return InitReport(str(path), loaded, tuple(res.missing), tuple(res.unexpected), tuple(res.mismatched))
