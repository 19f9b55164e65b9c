"""SPANetV2 (Yun et al., arXiv 2503.23947): CAFormer-style MetaFormer with the SPAM v2 token mixer.

Channels-last stages of timm ``MetaFormerBlock`` s (LayerNorm without bias, eps 1e-6; StarReLU MLP
without biases; residual scales in stages 3 and 4). Stem: conv 7x7 stride 4 then LayerNorm;
downsampling: LayerNorm then conv 3x3 stride 2. Head: global mean, LayerNorm, MLP head (Linear 4x,
SquaredReLU, LayerNorm, Linear). "pure" models use SPAM v2 in every stage; "hybrid" ones use it in
stages 1-2, attention plus a depthwise 7x7 conv on the values ("MixAttention") in stage 3 and plain
attention in stage 4 (head dim 32, no biases), both through :class:`freqkit.layers.Attention`.

Module names are the released ones (``downsample_layers.<i>.{conv, pre_norm, post_norm}``,
``stages.<s>.<b>.{norm1, token_mixer, res_scale1, norm2, mlp, res_scale2}``, ``norm``,
``head.{fc1, norm, fc2}``, dense-prediction norms ``norm<i>``), so released checkpoints load as
they are (:func:`checkpoint_filter_fn` only checks the SPAM v2 channel layout). The spectral gains
are sized for a 224 input (``img_size``) and resized to any other grid; inputs need sides divisible by 32.
"""

from __future__ import annotations

from functools import partial
from typing import Any, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from timm.layers import calculate_drop_path_rates, trunc_normal_
from timm.models import generate_default_cfgs, register_model
from timm.models.metaformer import LayerNormNoBias, MetaFormerBlock, MlpHead
from torch import nn

from freqkit.errors import FreqkitError
from freqkit.layers.attention import Attention
from freqkit.layers.spam_v2 import SPAMv2, checkpoint_layout
from freqkit.layers.starrelu import StarReLU
from freqkit.models.spanet import StagedBackbone, _check_pool, create_staged, staged_cfg

__all__ = ["SPANetV2", "GridAttention", "checkpoint_filter_fn", "MIXERS"]

MIXERS = ("spam", "mixattn", "attn")
_PURE = ("spam",) * 4
_HYBRID = ("spam", "spam", "mixattn", "attn")


class GridAttention(Attention):
    """Self-attention on channels-last maps (B, H, W, C) -> (B, H, W, C), heads of ``head_dim``.

    ``value_kernel`` > 0 adds a depthwise conv of the values (heads merged back to a map) to the
    attention output before the projection: the released ``MixAttention`` (key ``local_conv``).
    """

    def __init__(
        self,
        dim: int,
        head_dim: int = 32,
        value_kernel: int = 0,
        fused: bool = True,
        proj_drop: float = 0.0,
        device: Optional[torch.device] = None,
        dtype: Optional[torch.dtype] = None,
    ) -> None:
        if dim % head_dim != 0:
            raise FreqkitError(
                f"SPANetV2 attention: dim {dim} is not a multiple of the head dim {head_dim}; use dims divisible by {head_dim}"
            )
        super().__init__(dim, dim // head_dim, qkv_bias=False, proj_bias=False, proj_drop=proj_drop, fused=fused)
        self.local_conv = None
        if value_kernel:
            self.local_conv = nn.Conv2d(dim, dim, value_kernel, padding=value_kernel // 2, groups=dim, bias=False)
        if device is not None or dtype is not None:
            self.to(device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        b, h, w, c = x.shape
        tokens = x.reshape(b, h * w, c)
        if self.local_conv is None:
            return super().forward(tokens).reshape(b, h, w, c)
        q, k, v = self.qkv_heads(tokens)
        if self.fused:
            out = F.scaled_dot_product_attention(q, k, v)
        else:
            out = self._matrix(q, k, None, False) @ v
        merged = lambda t: t.transpose(1, 2).reshape(b, h, w, c)  # noqa: E731  (B, heads, N, d) -> (B, H, W, C)
        out = merged(out) + self.local_conv(merged(v).permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return self.proj_drop(self.proj(out))


class _LNDownsample(nn.Module):
    """SPANetV2 downsampling: [LayerNorm] conv [LayerNorm]; (B, H, W, C) or stem (B, C, H, W) -> (B, H', W', C')."""

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int, stride: int, padding: int, stem: bool) -> None:
        super().__init__()
        self.stem = stem
        self.pre_norm = nn.Identity() if stem else LayerNormNoBias(in_chs, eps=1e-6)
        self.conv = nn.Conv2d(in_chs, out_chs, kernel_size, stride=stride, padding=padding)
        self.post_norm = LayerNormNoBias(out_chs, eps=1e-6) if stem else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.stem:
            x = self.pre_norm(x).permute(0, 3, 1, 2)
        return self.post_norm(self.conv(x).permute(0, 2, 3, 1))


class SPANetV2(StagedBackbone):
    """SPANetV2 classifier / backbone: images (B, in_chans, H, W), H and W divisible by 32 -> (B, num_classes).

    ``mixers`` per stage: "spam" (SPAM v2), "mixattn" or "attn". ``layout`` / ``gain`` go to every
    SPAM v2 and ``fused`` to every SPAM v2 and attention (False: reference paths); ``out_norms`` adds the per-stage LayerNorms used for dense prediction.
    """

    channels_last = True
    init_new_head = True

    def __init__(
        self,
        depths: Sequence[int] = (3, 3, 9, 3),
        dims: Sequence[int] = (64, 128, 320, 512),
        mixers: Sequence[str] = _PURE,
        in_chans: int = 3,
        num_classes: int = 1000,
        global_pool: str = "avg",
        img_size: Union[int, tuple[int, int]] = 224,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        head_dropout: float = 0.0,
        res_scale_init_values: Sequence[Optional[float]] = (None, None, 1.0, 1.0),
        layout: str = "interleave",
        gain: str = "sigmoid",
        fused: bool = True,
        head_dim: int = 32,
        out_norms: bool = False,
    ) -> None:
        super().__init__()
        if not (len(depths) == len(dims) == len(mixers) == len(res_scale_init_values) == 4):
            raise FreqkitError("SPANetV2 needs four stages: depths, dims, mixers and res_scale_init_values of length 4")
        bad = [m for m in mixers if m not in MIXERS]
        if bad:
            raise FreqkitError(f"SPANetV2: unknown mixer {bad[0]!r}; use one of {', '.join(MIXERS)}")
        _check_pool(global_pool)
        self._init_plumbing(dims, num_classes, out_norms)
        self.global_pool = global_pool
        img_h, img_w = (img_size, img_size) if isinstance(img_size, int) else img_size
        chans = [in_chans, *dims]
        self.downsample_layers = nn.ModuleList(
            _LNDownsample(chans[i], chans[i + 1], *((7, 4, 2) if i == 0 else (3, 2, 1)), stem=i == 0) for i in range(4)
        )
        dpr = calculate_drop_path_rates(drop_path_rate, list(depths), stagewise=True)  # per block, split by stage
        self.stages = nn.ModuleList()
        for i in range(4):
            if mixers[i] == "spam":
                size = (img_h // 2 ** (i + 2), img_w // 2 ** (i + 2))
                mixer = partial(SPAMv2, size=size, layout=layout, gain=gain, fused=fused)
            else:
                mixer = partial(GridAttention, head_dim=head_dim, value_kernel=7 if mixers[i] == "mixattn" else 0, fused=fused)
            self.stages.append(
                nn.Sequential(
                    *[
                        MetaFormerBlock(
                            dims[i],
                            token_mixer=mixer,
                            # in place: the MLP's hidden layer (4C channels) is read by nothing else
                            mlp_act=partial(StarReLU, inplace=True),
                            mlp_bias=False,
                            norm_layer=partial(LayerNormNoBias, eps=1e-6),
                            drop_path=dpr[i][j],
                            use_nchw=False,
                            res_scale_init_value=res_scale_init_values[i],
                        )
                        for j in range(depths[i])
                    ]
                )
            )
            if out_norms:
                self.add_module(f"norm{i}", LayerNormNoBias(dims[i], eps=1e-6))
        self.norm = nn.LayerNorm(dims[-1], eps=1e-6)
        self.head_drop = nn.Dropout(drop_rate)
        self.head_dropout = head_dropout
        self.head = self._make_head(num_classes)
        self.apply(self._init_weights)

    def _make_head(self, num_classes: int) -> nn.Module:
        if num_classes <= 0:
            return nn.Identity()
        return MlpHead(self.num_features, num_classes, norm_layer=nn.LayerNorm, drop_rate=self.head_dropout)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, (nn.Conv2d, nn.Linear)) and not m.weight.is_meta:  # meta: shape-only builds
            trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Last stage map (B, h, w, C) -> global mean, LayerNorm, MLP head -> (B, num_classes).

        With ``global_pool=''`` the map is not pooled: (B, h, w, C), the LayerNorm applied per position.
        """
        if self.global_pool == "avg":
            x = x.mean((1, 2))
        x = self.head_drop(self.norm(x))
        return x if pre_logits else self.head(x)


def checkpoint_filter_fn(state_dict: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Released SPANetV2 state dict -> this model's (same names; the SPAM v2 layout must match).

    A checkpoint of the later head-major variant (``token_mixer.filter``, ``local_convs.<i>``) loaded
    into a model built with the interleave layout raises a FreqkitError naming the layout to build.
    """
    layout = checkpoint_layout(state_dict)
    spam = next((m for m in model.modules() if isinstance(m, SPAMv2)), None)
    if layout == "head_major" and spam is not None and spam.layout != "head_major":
        raise FreqkitError("this SPANetV2 checkpoint uses the head_major SPAM layout; create the model with layout='head_major'")
    return dict(state_dict)


_VARIANTS = {
    "s18": dict(depths=(3, 3, 9, 3), dims=(64, 128, 320, 512)),
    "s36": dict(depths=(3, 12, 18, 3), dims=(64, 128, 320, 512)),
    "m36": dict(depths=(3, 12, 18, 3), dims=(96, 192, 384, 576)),
    "b36": dict(depths=(3, 12, 18, 3), dims=(128, 256, 512, 768)),
}

default_cfgs = generate_default_cfgs(
    {
        f"spanetv2_{s}_{k}": staged_cfg(crop_pct=1.0, first_conv="downsample_layers.0.conv", classifier="head.fc2")
        for s in _VARIANTS
        for k in ("pure", "hybrid")
    }
)


def _variant(size: str, kind: str, pretrained: bool, kwargs: dict[str, Any]) -> SPANetV2:
    args = dict(_VARIANTS[size], mixers=_PURE if kind == "pure" else _HYBRID)
    return create_staged(SPANetV2, f"spanetv2_{size}_{kind}", pretrained, checkpoint_filter_fn, **dict(args, **kwargs))


@register_model
def spanetv2_s18_pure(pretrained: bool = False, **kwargs: Any) -> SPANetV2:
    """SPANetV2-S18, SPAM v2 in all stages: (B, 3, H, W) -> (B, 1000), H, W divisible by 32."""
    return _variant("s18", "pure", pretrained, kwargs)


@register_model
def spanetv2_s18_hybrid(pretrained: bool = False, **kwargs: Any) -> SPANetV2:
    """SPANetV2-S18 hybrid (SPAM v2, SPAM v2, MixAttention, Attention): (B, 3, H, W) -> (B, 1000)."""
    return _variant("s18", "hybrid", pretrained, kwargs)


@register_model
def spanetv2_s36_pure(pretrained: bool = False, **kwargs: Any) -> SPANetV2:
    """SPANetV2-S36, SPAM v2 in all stages: (B, 3, H, W) -> (B, 1000), H, W divisible by 32."""
    return _variant("s36", "pure", pretrained, kwargs)


@register_model
def spanetv2_s36_hybrid(pretrained: bool = False, **kwargs: Any) -> SPANetV2:
    """SPANetV2-S36 hybrid (SPAM v2, SPAM v2, MixAttention, Attention): (B, 3, H, W) -> (B, 1000)."""
    return _variant("s36", "hybrid", pretrained, kwargs)


@register_model
def spanetv2_m36_pure(pretrained: bool = False, **kwargs: Any) -> SPANetV2:
    """SPANetV2-M36, SPAM v2 in all stages: (B, 3, H, W) -> (B, 1000), H, W divisible by 32."""
    return _variant("m36", "pure", pretrained, kwargs)


@register_model
def spanetv2_m36_hybrid(pretrained: bool = False, **kwargs: Any) -> SPANetV2:
    """SPANetV2-M36 hybrid (SPAM v2, SPAM v2, MixAttention, Attention): (B, 3, H, W) -> (B, 1000)."""
    return _variant("m36", "hybrid", pretrained, kwargs)


@register_model
def spanetv2_b36_pure(pretrained: bool = False, **kwargs: Any) -> SPANetV2:
    """SPANetV2-B36, SPAM v2 in all stages: (B, 3, H, W) -> (B, 1000), H, W divisible by 32."""
    return _variant("b36", "pure", pretrained, kwargs)


@register_model
def spanetv2_b36_hybrid(pretrained: bool = False, **kwargs: Any) -> SPANetV2:
    """SPANetV2-B36 hybrid (SPAM v2, SPAM v2, MixAttention, Attention): (B, 3, H, W) -> (B, 1000)."""
    return _variant("b36", "hybrid", pretrained, kwargs)
