"""SPANet (Yun et al., ICCV 2023): the MetaFormer built on the SPAM token mixer.

Four stages of timm ``MetaFormerBlock`` s (GroupNorm with one group, SPAM, a GELU 1x1-conv MLP with
biases, per-channel residual scales in stages 3 and 4), a 7x7 stride-4 stem and 3x3 stride-2
downsampling convolutions; head GroupNorm, global mean, Linear. SPAM builds its masks for the
actual grid, so any input whose sides are divisible by 32 works (the released model runs at 224 only).

Module layout: ``downsample_layers.<i>.proj`` (the stem is i = 0), ``stages.<i>.<block>``,
``norm``, ``head``, and with ``features_only=True`` one GroupNorm per stage output (``norm<i>``).
Released checkpoints (``patch_embed.proj``, ``network.<0..6>``, ``norm{0,2,4,6}`` of the dense
variant, the fixed masks ``sps.<i>.filter``) load through :func:`checkpoint_filter_fn`, which renames
them and checks the masks against this model's radii before dropping them. Through timm:
``timm.create_model("spanet_small", pretrained=True, pretrained_cfg_overlay=dict(file=PATH))``.

This file also holds :class:`StagedBackbone`, the stage / feature / head plumbing shared with SPANetV2.
"""

from __future__ import annotations

import re
from functools import partial
from typing import Any, Optional, Sequence, Union

import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import GroupNorm1, calculate_drop_path_rates, trunc_normal_
from timm.models import build_model_with_cfg, checkpoint_seq, generate_default_cfgs, register_model
from timm.models._features import feature_take_indices
from timm.models.metaformer import MetaFormerBlock
from torch import nn

from freqkit.errors import FreqkitError
from freqkit.layers._tracing import fx_tracing
from freqkit.layers.spam import SPAM, SPAM_LAMBDAS

__all__ = ["SPANet", "StagedBackbone", "checkpoint_filter_fn", "create_staged", "staged_cfg"]


class StagedBackbone(nn.Module):
    """Four-stage backbone plumbing: ``downsample_layers`` and ``stages`` alternate; per-stage norms.

    Subclasses build ``downsample_layers`` / ``stages`` (nn.ModuleList, stage i = nn.Sequential of
    blocks), optional ``norm<i>`` dense-prediction norms, ``norm`` and ``head``, and define
    ``_make_head(num_classes)`` / ``forward_head``. ``channels_last`` says whether stages run on
    (B, H, W, C) maps; ``output_fmt`` records that format, as in timm: the stage modules and
    ``forward_features`` (and the final output of ``forward_intermediates``) use it, while the
    intermediate feature maps are (B, C, H, W) unless ``output_fmt="NHWC"`` is asked for.
    """

    # Not timm's MetaFormerStage: it nests the downsampling in each stage (stages.i.downsample / stages.i.blocks.j),
    # while the released SPANet / SPANetV2 checkpoints keep downsample_layers.i / stages.i.j; the blocks are timm's.
    channels_last: bool = False
    reduction: int = 32
    # whether reset_classifier re-initializes the new head with _init_weights (SPANetV2) or keeps torch's init (SPANet)
    init_new_head: bool = False

    def _init_plumbing(self, dims: Sequence[int], num_classes: int, out_norms: bool) -> None:
        self.dims = tuple(dims)
        self.num_classes = num_classes
        self.num_features = self.head_hidden_size = dims[-1]
        self.grad_checkpointing = False
        self.has_out_norms = out_norms
        self.output_fmt = "NHWC" if self.channels_last else "NCHW"
        self.feature_info = [dict(num_chs=d, reduction=2 ** (i + 2), module=f"stages.{i}") for i, d in enumerate(dims)]

    # ---- helpers ------------------------------------------------------------------------------
    def _check_input(self, x: torch.Tensor) -> None:
        if fx_tracing():  # sizes are proxies under torch.fx; the traced graph runs unchecked, as timm's models do
            return
        if x.ndim != 4:
            raise FreqkitError(f"{type(self).__name__} expects images (B, C, H, W), got shape {tuple(x.shape)}")
        h, w = x.shape[-2:]
        if h % self.reduction or w % self.reduction:
            raise FreqkitError(
                f"{type(self).__name__} needs input height and width divisible by {self.reduction}, got {h}x{w}; "
                f"resize or pad the image to a multiple of {self.reduction}"
            )

    def _run_stage(self, i: int, x: torch.Tensor) -> torch.Tensor:
        x = self.downsample_layers[i](x)
        if self.grad_checkpointing and not torch.jit.is_scripting():
            return checkpoint_seq(self.stages[i], x)
        return self.stages[i](x)

    def _to_nchw(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(0, 3, 1, 2) if self.channels_last else x

    # ---- timm API -----------------------------------------------------------------------------
    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each stage's blocks in the backward pass (saves activation memory)."""
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        """Parameter groups for layer-wise learning-rate decay (timm convention)."""
        return dict(
            stem=r"^downsample_layers\.0",
            blocks=r"^stages\.(\d+)" if coarse else [(r"^stages\.(\d+)\.(\d+)", None), (r"^downsample_layers\.(\d+)", (0,))],
        )

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        """The classifier head module."""
        return self.head

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        return {"norm"}

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        """Replace the classifier with a fresh ``_make_head(num_classes)`` (0: no classifier)."""
        if global_pool is not None:
            _check_pool(global_pool)
            self.global_pool = global_pool
        self.num_classes = num_classes
        self.head = self._make_head(num_classes)
        if num_classes > 0 and self.init_new_head:
            self.head.apply(self._init_weights)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Images (B, in_chans, H, W) -> last stage map (B, C, H / 32, W / 32) ((B, H / 32, W / 32, C)
        when ``output_fmt`` is "NHWC"), before the head."""
        self._check_input(x)
        for i in range(len(self.stages)):
            x = self._run_stage(i, x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images (B, in_chans, H, W) -> logits (B, num_classes) (pooled features if num_classes = 0)."""
        return self.forward_head(self.forward_features(x))

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: Optional[Union[int, list[int]]] = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> Union[list[torch.Tensor], tuple[torch.Tensor, list[torch.Tensor]]]:
        """Stage outputs (B, C_i, H / 2^(i+2), W / 2^(i+2)) for ``indices`` (stage ids; int = last n).

        With dense-prediction norms (``features_only=True``) each output passes its stage norm.
        ``norm`` (timm's final-norm flag) does not apply: the final norm is part of the head here.
        """
        if output_fmt not in ("NCHW", "NHWC"):
            raise FreqkitError(f"output_fmt must be 'NCHW' or 'NHWC', got {output_fmt!r}")
        self._check_input(x)
        take, max_index = feature_take_indices(len(self.stages), indices)
        last = max_index if stop_early else len(self.stages) - 1
        feats = []
        for i in range(last + 1):
            x = self._run_stage(i, x)
            if i in take:
                y = getattr(self, f"norm{i}")(x) if self.has_out_norms else x
                y = self._to_nchw(y)
                feats.append(y.permute(0, 2, 3, 1) if output_fmt == "NHWC" else y)
        if intermediates_only:
            return feats
        return x, feats

    def prune_intermediate_layers(
        self, indices: Union[int, list[int]] = 1, prune_norm: bool = False, prune_head: bool = True
    ) -> list[int]:
        """Drop the stages after the last wanted one (and the head); returns the stage indices kept."""
        take, max_index = feature_take_indices(len(self.stages), indices)
        self.stages = self.stages[: max_index + 1]
        self.downsample_layers = self.downsample_layers[: max_index + 1]
        for i in range(max_index + 1, len(self.dims)):
            if hasattr(self, f"norm{i}"):
                delattr(self, f"norm{i}")
        if prune_norm or max_index < len(self.dims) - 1:
            self.norm = nn.Identity()
        if prune_head or max_index < len(self.dims) - 1:
            self.reset_classifier(0)
        return take


class _ConvDownsample(nn.Module):
    """SPANet patch embedding / downsampling: one strided conv (B, C_in, H, W) -> (B, C_out, H / s, W / s)."""

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int, stride: int, padding: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chs, out_chs, kernel_size, stride=stride, padding=padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


class SPANet(StagedBackbone):
    """SPANet classifier / backbone: images (B, in_chans, H, W), H and W divisible by 32 -> (B, num_classes).

    ``radius`` per stage (released 2, 2, 1, 1); ``fused=False`` runs every SPAM on its reference
    path (the released algorithm); ``out_norms`` adds the per-stage GroupNorms used for dense prediction.
    """

    def __init__(
        self,
        depths: Sequence[int] = (4, 4, 12, 4),
        dims: Sequence[int] = (64, 128, 320, 512),
        radius: Sequence[float] = (2, 2, 1, 1),
        in_chans: int = 3,
        num_classes: int = 1000,
        global_pool: str = "avg",
        kernel_size: int = 7,
        lambdas: Sequence[float] = SPAM_LAMBDAS,
        mlp_ratio: float = 4.0,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        res_scale_init_values: Sequence[Optional[float]] = (None, None, 1.0, 1.0),
        fused: bool = True,
        out_norms: bool = False,
    ) -> None:
        super().__init__()
        if not (len(depths) == len(dims) == len(radius) == len(res_scale_init_values) == 4):
            raise FreqkitError("SPANet needs four stages: depths, dims, radius and res_scale_init_values of length 4")
        if mlp_ratio != 4:
            raise FreqkitError("SPANet uses timm's MetaFormerBlock, whose MLP ratio is 4; pass mlp_ratio=4")
        _check_pool(global_pool)
        self._init_plumbing(dims, num_classes, out_norms)
        self.global_pool = global_pool
        self.drop_rate = drop_rate
        chans = [in_chans, *dims]
        self.downsample_layers = nn.ModuleList(
            _ConvDownsample(chans[i], chans[i + 1], *((7, 4, 2) if i == 0 else (3, 2, 1))) for i in range(4)
        )
        dpr = calculate_drop_path_rates(drop_path_rate, list(depths), stagewise=True)  # per block, split by stage
        self.stages = nn.ModuleList()
        for i in range(4):
            mixer = partial(SPAM, kernel_size=kernel_size, radius=radius[i], lambdas=lambdas, fused=fused)
            self.stages.append(
                nn.Sequential(
                    *[
                        MetaFormerBlock(
                            dims[i],
                            token_mixer=mixer,
                            mlp_act=nn.GELU,
                            mlp_bias=True,
                            norm_layer=GroupNorm1,
                            drop_path=dpr[i][j],
                            use_nchw=True,
                            res_scale_init_value=res_scale_init_values[i],
                        )
                        for j in range(depths[i])
                    ]
                )
            )
            if out_norms:
                self.add_module(f"norm{i}", GroupNorm1(dims[i]))
        self.norm = GroupNorm1(dims[-1])
        self.head_drop = nn.Dropout(drop_rate)
        self.head = self._make_head(num_classes)
        self.apply(self._init_weights)

    def _init_weights(self, m: nn.Module) -> None:
        # the released model: trunc-normal(0.02) for Linear layers and the MLP's 1x1 convs
        if isinstance(m, nn.Linear):
            targets = [m]
        elif isinstance(m, MetaFormerBlock):
            targets = [m.mlp.fc1, m.mlp.fc2]
        else:
            return
        for layer in targets:
            if layer.weight.is_meta:  # shape-only builds (parameter counting) hold no values
                continue
            trunc_normal_(layer.weight, std=0.02)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)

    def _make_head(self, num_classes: int) -> nn.Module:
        return nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Last stage map (B, C, h, w) -> GroupNorm, global mean, Linear -> (B, num_classes).

        With ``global_pool=''`` the normalized map (B, C, h, w) is not pooled (timm's convention).
        """
        x = self.norm(x)
        if self.global_pool == "avg":
            x = x.mean((-2, -1))
        x = self.head_drop(x)
        return x if pre_logits else self.head(x)


def _check_pool(global_pool: str) -> None:
    if global_pool not in ("avg", ""):
        raise FreqkitError(f"global_pool {global_pool!r} is not supported; use 'avg' or '' (no pooling)")


_RELEASED_NETWORK = re.compile(r"^network\.(\d+)\.(.*)$")
_RELEASED_MASK = re.compile(r"^(.*)\.sps\.(\d+)\.filter$")
_RELEASED_NORM = re.compile(r"^norm([0246])\.(.*)$")


def released_key(key: str) -> str:
    """The freqkit name of a released SPANet key (``network.<n>``, ``patch_embed``, ``norm<2i>``)."""
    if key.startswith("patch_embed."):
        return "downsample_layers.0." + key[len("patch_embed.") :]
    m = _RELEASED_NETWORK.match(key)
    if m:
        n, rest = int(m.group(1)), m.group(2)
        return f"stages.{n // 2}.{rest}" if n % 2 == 0 else f"downsample_layers.{(n + 1) // 2}.{rest}"
    m = _RELEASED_NORM.match(key)
    if m:
        return f"norm{int(m.group(1)) // 2}.{m.group(2)}"
    return key


def checkpoint_filter_fn(state_dict: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Released SPANet state dict -> this model's: rename, check the fixed masks, drop them.

    A mask that is not the one this model's SPAM would build (wrong radius) raises a FreqkitError.
    Keys the model does not have (a classifier head for a ``features_only`` model) are dropped.
    """
    released = any(k.startswith(("network.", "patch_embed.")) for k in state_dict)
    modules = dict(model.named_modules())
    out = {}
    for key, value in state_dict.items():
        key = released_key(key) if released else key
        m = _RELEASED_MASK.match(key)
        if m:
            mixer = modules.get(m.group(1))
            if isinstance(mixer, SPAM):
                mixer.check_released_mask(int(m.group(2)), value)
            continue
        out[key] = value
    return out


def create_staged(cls: type, variant: str, pretrained: bool, filter_fn, **kwargs: Any) -> nn.Module:
    """timm build of a StagedBackbone family; ``features_only`` models get the per-stage norms."""
    if kwargs.get("features_only"):
        kwargs.setdefault("out_norms", True)
    return build_model_with_cfg(
        cls,
        variant,
        pretrained,
        pretrained_filter_fn=filter_fn,
        feature_cfg=dict(out_indices=(0, 1, 2, 3), feature_cls="getter"),
        **kwargs,
    )


def staged_cfg(**kwargs: Any) -> dict[str, Any]:
    """pretrained_cfg of these families; no URL: released weights come from a local file
    (``pretrained_cfg_overlay=dict(file=...)``)."""
    return {
        "url": "",
        "num_classes": 1000,
        "input_size": (3, 224, 224),
        "pool_size": (7, 7),
        "crop_pct": 0.9,
        "interpolation": "bicubic",
        "mean": IMAGENET_DEFAULT_MEAN,
        "std": IMAGENET_DEFAULT_STD,
        "first_conv": "downsample_layers.0.proj",
        "classifier": "head",
        "license": "apache-2.0",
        **kwargs,
    }


def _create_spanet(variant: str, pretrained: bool = False, **kwargs: Any) -> SPANet:
    return create_staged(SPANet, variant, pretrained, checkpoint_filter_fn, **kwargs)


default_cfgs = generate_default_cfgs(
    {
        "spanet_small": staged_cfg(),
        "spanet_medium": staged_cfg(),
        "spanet_mediumx": staged_cfg(),
        "spanet_base": staged_cfg(crop_pct=0.95),
        "spanet_basex": staged_cfg(crop_pct=0.95),
    }
)

_SMALL_DIMS = (64, 128, 320, 512)
_BASE_DIMS = (96, 192, 384, 768)


@register_model
def spanet_small(pretrained: bool = False, **kwargs: Any) -> SPANet:
    """SPANet-S (depths 4, 4, 12, 4; 28.6M params): (B, 3, H, W) -> (B, 1000), H, W divisible by 32."""
    return _create_spanet("spanet_small", pretrained, **dict(dict(depths=(4, 4, 12, 4), dims=_SMALL_DIMS), **kwargs))


@register_model
def spanet_medium(pretrained: bool = False, **kwargs: Any) -> SPANet:
    """SPANet-M (depths 6, 6, 18, 6): (B, 3, H, W) -> (B, 1000), H, W divisible by 32."""
    return _create_spanet("spanet_medium", pretrained, **dict(dict(depths=(6, 6, 18, 6), dims=_SMALL_DIMS), **kwargs))


@register_model
def spanet_mediumx(pretrained: bool = False, **kwargs: Any) -> SPANet:
    """SPANet-MX (depths 8, 8, 24, 8): (B, 3, H, W) -> (B, 1000), H, W divisible by 32."""
    return _create_spanet("spanet_mediumx", pretrained, **dict(dict(depths=(8, 8, 24, 8), dims=_SMALL_DIMS), **kwargs))


@register_model
def spanet_base(pretrained: bool = False, **kwargs: Any) -> SPANet:
    """SPANet-B (depths 6, 6, 18, 6, dims 96 ... 768): (B, 3, H, W) -> (B, 1000), H, W divisible by 32."""
    return _create_spanet("spanet_base", pretrained, **dict(dict(depths=(6, 6, 18, 6), dims=_BASE_DIMS), **kwargs))


@register_model
def spanet_basex(pretrained: bool = False, **kwargs: Any) -> SPANet:
    """SPANet-BX (depths 8, 8, 24, 8, dims 96 ... 768): (B, 3, H, W) -> (B, 1000), H, W divisible by 32."""
    return _create_spanet("spanet_basex", pretrained, **dict(dict(depths=(8, 8, 24, 8), dims=_BASE_DIMS), **kwargs))
