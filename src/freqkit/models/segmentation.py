"""Semantic segmentation models: any timm / freqkit backbone + a UPerNet head.

Backbones come in two kinds:

* ViT family (timm ``VisionTransformer``, converted by ``freqkit.convert`` or not, and freqkit's
  ``fdam_vit_*_dense``): four blocks (evenly spaced, the last one included) are read through
  ``forward_intermediates`` as stride-p maps (p = patch size) and go through one of three necks
  (``neck``): ``pyramid`` (default; a stride 4 / 8 / 16 / 32 pyramid with 2x transposed convs to go
  up, identity, 2x max-pool to go down, a LayerNorm on every level and GroupNorm between the
  transposed convs, so results do not depend on the per-process batch), ``simple`` (the released
  FDAM ``SimpleMultiLevelNeck``: the same resampling with the head's norm between the transposed
  convs, BatchNorm in the paper recipe, and no per-level norm) or ``none`` (the four stride-p maps
  as they are, as mmsegmentation's DeiT UPerNet configs with ``neck=None``).
* Anything with ``features_only=True`` (ConvNeXt, ResNet, SPANet, ...): the levels of stride >= 4.

The head is UPerNet (Xiao et al. 2018), as in the FDAM paper's ADE20K protocol: a pyramid pooling
module on the coarsest level, a top-down FPN, and the fusion of every level at stride 4. It uses
GroupNorm by default (no batch statistics: identical under DDP and at batch size 1), or BatchNorm as in
the paper recipe (``norm="batch"``; the training loop makes it SyncBatchNorm under DDP). An optional
auxiliary FCN head on level ``aux_level`` (default 2, the third; the ViT recipes read the fourth,
as mmsegmentation's ViT configs) adds a second output in training mode only. The heads start from
PyTorch's default initialization (``head_init="torch"``), or as mmsegmentation's (``"mmseg"``, the paper
recipes): convolutions He-normal on fan-out, classifiers normal with std 0.01, zero biases. The latter
suits 160k-iteration schedules; in a few hundred steps it learns far slower (on ``shapes``, 500 steps of
``vit_mini``: 33 % mIoU against 55 % from PyTorch's default).

Segmentation models are not registered with timm (they are not image classifiers: no
``pretrained_cfg``, no classifier head); build them with :func:`create_segmentation_model`.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F
from timm.layers import LayerNorm2d
from torch import nn

from freqkit.errors import FreqkitError

__all__ = [
    "ConvNormAct",
    "ViTPyramidNeck",
    "ViTFeatures",
    "UPerHead",
    "FCNHead",
    "SegmentationModel",
    "create_segmentation_model",
    "is_vit",
]


NORMS = ("group", "batch")


def _group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(8, channels), channels)


def _norm(kind: str, channels: int) -> nn.Module:
    if kind not in NORMS:
        raise FreqkitError(f"unknown head norm {kind!r}; use {' or '.join(NORMS)}")
    return _group_norm(channels) if kind == "group" else nn.BatchNorm2d(channels)


class ConvNormAct(nn.Sequential):
    """Conv2d (no bias) + GroupNorm (or BatchNorm, ``norm="batch"``) + ReLU: (B, Cin, H, W) -> (B, Cout, H, W)."""

    def __init__(self, cin: int, cout: int, kernel_size: int = 1, norm: str = "group") -> None:
        super().__init__(
            nn.Conv2d(cin, cout, kernel_size, padding=kernel_size // 2, bias=False),
            _norm(norm, cout),
            nn.ReLU(inplace=True),
        )


NECKS = ("pyramid", "simple", "none")
HEAD_INITS = ("torch", "mmseg")


def _inner_norm(kind: str, dim: int) -> nn.Module:
    return _group_norm(dim) if kind == "group" else _norm(kind, dim)


def _resample_stage(dim: int, scale: float, norm: str = "group") -> nn.Module:
    """A module that rescales a (B, C, H, W) map by ``scale`` (a power of two), or None if it is not one;
    consecutive 2x transposed convs have ``norm`` (group / batch) and GELU between them."""
    log2 = math.log2(scale)
    if abs(log2 - round(log2)) > 1e-9:
        return None
    n = int(round(log2))
    if n == 0:
        return nn.Identity()
    if n < 0:
        return nn.MaxPool2d(kernel_size=2 ** (-n), stride=2 ** (-n))
    layers: list[nn.Module] = []
    for i in range(n):
        if i:
            layers += [_inner_norm(norm, dim), nn.GELU()]
        layers.append(nn.ConvTranspose2d(dim, dim, kernel_size=2, stride=2))
    return nn.Sequential(*layers)


class ViTPyramidNeck(nn.Module):
    """Four stride-p ViT maps (B, C, H/p, W/p) -> maps at strides ``out_strides`` (default 4, 8, 16, 32).

    Power-of-two ratios use 2x transposed convolutions (up, with ``inner_norm`` and GELU between two of
    them) or max-pooling (down); other ratios (e.g. patch 14) resize bilinearly to the target grid.
    ``level_norm`` puts a LayerNorm on every input map first (freqkit's default neck; the released
    ``SimpleMultiLevelNeck`` has none).
    """

    def __init__(
        self,
        dim: int,
        patch_size: int,
        out_strides: Sequence[int] = (4, 8, 16, 32),
        level_norm: bool = True,
        inner_norm: str = "group",
    ) -> None:
        super().__init__()
        self.patch_size, self.out_strides = int(patch_size), tuple(int(s) for s in out_strides)
        self.norms = nn.ModuleList((LayerNorm2d(dim, eps=1e-6) if level_norm else nn.Identity()) for _ in self.out_strides)
        stages, self._resize = [], []
        for s in self.out_strides:
            stage = _resample_stage(dim, self.patch_size / s, inner_norm)
            self._resize.append(stage is None)
            stages.append(stage if stage is not None else nn.Identity())
        self.stages = nn.ModuleList(stages)

    def forward(self, feats: Sequence[torch.Tensor], image_size: tuple[int, int]) -> list[torch.Tensor]:
        """Maps (B, C, h, w) per level -> pyramid maps (B, C, ceil(H / s), ceil(W / s))."""
        if len(feats) != len(self.out_strides):
            raise FreqkitError(f"ViTPyramidNeck expects {len(self.out_strides)} maps, got {len(feats)}")
        outs = []
        for x, norm, stage, resize, s in zip(feats, self.norms, self.stages, self._resize, self.out_strides):
            x = norm(x)
            if resize:
                x = F.interpolate(
                    x, size=(math.ceil(image_size[0] / s), math.ceil(image_size[1] / s)), mode="bilinear", align_corners=False
                )
            else:
                x = stage(x)
            outs.append(x)
        return outs


class ViTFeatures(nn.Module):
    """A ViT (timm ``VisionTransformer`` or freqkit ``FdamViTDense``) (B, 3, H, W) -> four maps through a neck.

    ``neck``: ``pyramid`` / ``simple`` give strides ``out_strides`` (4, 8, 16, 32) through
    :class:`ViTPyramidNeck` (``simple``: no per-level LayerNorm, ``norm`` between the transposed convs);
    ``none`` gives the four blocks' stride-p maps unchanged.
    """

    def __init__(
        self,
        vit: nn.Module,
        indices: Optional[Sequence[int]] = None,
        out_strides: Sequence[int] = (4, 8, 16, 32),
        neck: str = "pyramid",
        norm: str = "group",
    ) -> None:
        super().__init__()
        from freqkit.models.fdam_vit import FdamViTDense

        if neck not in NECKS:
            raise FreqkitError(f"unknown neck {neck!r}; use one of {', '.join(NECKS)}")
        depth = len(vit.blocks)
        dense = isinstance(vit, FdamViTDense)
        if dense and vit.has_neck:
            raise FreqkitError("FdamViTDense carries its own neck (neck=True); build it with neck=False to segment with it")
        if indices is None:
            n = len(out_strides)
            indices = vit.block_indices if dense else sorted({max(0, round((i + 1) * depth / n) - 1) for i in range(n)})
        self.indices = [int(i) for i in indices]
        if len(self.indices) != len(out_strides) or not all(0 <= i < depth for i in self.indices):
            raise FreqkitError(
                f"feature indices {list(indices)} must be {len(out_strides)} block indices in 0..{depth - 1}; "
                f"a ViT needs at least {len(out_strides)} blocks for a {len(out_strides)}-level pyramid"
            )
        if dense and self.indices != list(vit.block_indices):
            raise FreqkitError(f"FdamViTDense outputs blocks {vit.block_indices}; build it with block_indices={self.indices}")
        # FdamViTDense numbers its outputs by level, timm's ViT by block
        self._take = list(range(len(self.indices))) if dense else self.indices
        self.vit = vit
        # drop what dense features never use (blocks after the last index, final norm, head): unused
        # parameters would stall DistributedDataParallel
        vit.prune_intermediate_layers(self._take, prune_norm=True, prune_head=True)
        patch = vit.patch_embed.patch_size
        patch = int(patch[0] if isinstance(patch, (tuple, list)) else patch)
        self.neck_kind = neck
        if neck == "none":
            out_strides = [patch] * len(self.indices)
            self.neck = ViTPyramidNeck(vit.embed_dim, patch, out_strides, level_norm=False)
        else:
            self.neck = ViTPyramidNeck(vit.embed_dim, patch, out_strides, level_norm=neck == "pyramid", inner_norm=norm)
        self.channels = [vit.embed_dim] * len(out_strides)
        self.strides = list(out_strides)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """(B, 3, H, W) -> list of (B, C, H/s, W/s), s in ``strides``."""
        feats = self.vit.forward_intermediates(x, indices=self._take, intermediates_only=True, norm=False)
        return self.neck(feats, x.shape[-2:])


def _init_head(head: nn.Module) -> None:
    """mmsegmentation's head init: convs He-normal (fan-out, ReLU), the classifier normal std 0.01, biases 0."""
    for m in head.modules():
        if isinstance(m, nn.Conv2d) and m is not head.classifier:
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    nn.init.normal_(head.classifier.weight, std=0.01)
    nn.init.zeros_(head.classifier.bias)


class UPerHead(nn.Module):
    """UPerNet decoder: maps (B, C_i, H/s_i, W/s_i), finest first -> logits (B, K, H/s_0, W/s_0)."""

    def __init__(
        self,
        in_channels: Sequence[int],
        num_classes: int,
        channels: int = 64,
        pool_scales: Sequence[int] = (1, 2, 3, 6),
        norm: str = "group",
        dropout: float = 0.0,
        init: str = "torch",
    ) -> None:
        super().__init__()
        self.pool_scales = tuple(pool_scales)
        self.ppm = nn.ModuleList(ConvNormAct(in_channels[-1], channels, norm=norm) for _ in self.pool_scales)
        self.bottleneck = ConvNormAct(in_channels[-1] + len(self.pool_scales) * channels, channels, 3, norm=norm)
        self.lateral = nn.ModuleList(ConvNormAct(c, channels, norm=norm) for c in in_channels[:-1])
        self.fpn = nn.ModuleList(ConvNormAct(channels, channels, 3, norm=norm) for _ in in_channels[:-1])
        self.fuse = ConvNormAct(len(in_channels) * channels, channels, 3, norm=norm)
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.classifier = nn.Conv2d(channels, num_classes, 1)
        if init == "mmseg":
            _init_head(self)

    @staticmethod
    def _up(x: torch.Tensor, size: torch.Size) -> torch.Tensor:
        return x if x.shape[-2:] == size else F.interpolate(x, size=size, mode="bilinear", align_corners=False)

    def forward(self, feats: Sequence[torch.Tensor]) -> torch.Tensor:
        """Pyramid maps, finest first -> logits at the finest level's resolution."""
        top = feats[-1]
        pooled = [self._up(conv(F.adaptive_avg_pool2d(top, s)), top.shape[-2:]) for s, conv in zip(self.pool_scales, self.ppm)]
        lat = [conv(f) for conv, f in zip(self.lateral, feats[:-1])] + [self.bottleneck(torch.cat([top, *pooled], 1))]
        for i in range(len(lat) - 1, 0, -1):
            lat[i - 1] = lat[i - 1] + self._up(lat[i], lat[i - 1].shape[-2:])
        outs = [conv(x) for conv, x in zip(self.fpn, lat[:-1])] + [lat[-1]]
        size = outs[0].shape[-2:]
        return self.classifier(self.dropout(self.fuse(torch.cat([self._up(o, size) for o in outs], 1))))


class FCNHead(nn.Module):
    """Auxiliary FCN head: one 3x3 ConvNormAct, dropout, 1x1 classifier: (B, Cin, h, w) -> (B, K, h, w)."""

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        channels: int = 256,
        norm: str = "group",
        dropout: float = 0.0,
        init: str = "torch",
    ) -> None:
        super().__init__()
        self.conv = ConvNormAct(in_channels, channels, 3, norm=norm)
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.classifier = nn.Conv2d(channels, num_classes, 1)
        if init == "mmseg":
            _init_head(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, Cin, h, w) -> logits (B, K, h, w)."""
        return self.classifier(self.dropout(self.conv(x)))


class SegmentationModel(nn.Module):
    """Backbone features + UPerNet head: image (B, 3, H, W) -> per-pixel logits (B, K, H, W).

    With ``aux_channels`` > 0 an :class:`FCNHead` reads pyramid level ``aux_level`` (0 = finest); in training mode
    ``forward`` then returns ``(logits, aux_logits)`` (both (B, K, H, W)), so every parameter takes part
    in the step (DistributedDataParallel needs no unused-parameter search); in eval mode only ``logits``.
    """

    def __init__(
        self,
        features: nn.Module,
        channels: Sequence[int],
        num_classes: int,
        head_channels: int = 64,
        norm: str = "group",
        dropout: float = 0.0,
        aux_channels: int = 0,
        aux_level: int = 2,
        head_init: str = "torch",
    ) -> None:
        super().__init__()
        if head_init not in HEAD_INITS:
            raise FreqkitError(f"unknown head_init {head_init!r}; use one of {', '.join(HEAD_INITS)}")
        self.features = features
        self.head = UPerHead(list(channels), num_classes, head_channels, norm=norm, dropout=dropout, init=head_init)
        self.num_classes = int(num_classes)
        self.aux_level = int(aux_level)
        if aux_channels and not 0 <= self.aux_level < len(channels):
            raise FreqkitError(f"aux_level {aux_level} is not a feature level of this backbone (0..{len(channels) - 1})")
        self.aux_head = (
            FCNHead(list(channels)[aux_level], num_classes, aux_channels, norm=norm, dropout=dropout, init=head_init)
            if aux_channels
            else None
        )

    @property
    def encoder(self) -> nn.Module:
        """The backbone network (the timm ViT for ViT-family models) for diagnostics such as ``freqkit.analyze``."""
        vit = getattr(self.features, "vit", None)
        if isinstance(vit, nn.Module):
            return vit
        net = getattr(self.features, "net", self.features)
        # timm's FeatureGetterNet keeps the whole backbone (with its blocks / stages) as ``model``
        inner = getattr(net, "model", None)
        return inner if isinstance(inner, nn.Module) else net

    def forward(self, x: torch.Tensor):
        """(B, 3, H, W) -> logits (B, K, H, W); in training mode with an aux head -> (logits, aux_logits)."""
        feats = self.features(x)
        logits = F.interpolate(self.head(feats), size=x.shape[-2:], mode="bilinear", align_corners=False)
        if self.aux_head is None or not self.training:
            return logits
        aux = F.interpolate(self.aux_head(feats[self.aux_level]), size=x.shape[-2:], mode="bilinear", align_corners=False)
        return logits, aux


def probe_model(name: str, **kwargs) -> nn.Module:
    """``timm.create_model(name, num_classes=0, **kwargs)`` on the meta device (no memory, no init), to read its type;
    models whose constructor needs real tensors (e.g. ``.item()`` on a drop-path schedule) are built on the CPU."""
    import timm

    try:
        with torch.device("meta"):
            return timm.create_model(name, pretrained=False, num_classes=0, **kwargs)
    except (RuntimeError, NotImplementedError):
        return timm.create_model(name, pretrained=False, num_classes=0, **kwargs)


def is_vit(model: nn.Module) -> bool:
    """True for timm ``VisionTransformer`` models (and subclasses), the family ``freqkit.convert`` supports."""
    from timm.models.vision_transformer import VisionTransformer

    return isinstance(model, VisionTransformer)


class _FeatureList(nn.Module):
    """A timm ``features_only`` model restricted to the levels of stride >= 4."""

    def __init__(self, net: nn.Module, keep: Sequence[int]) -> None:
        super().__init__()
        self.net, self.keep = net, list(keep)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = self.net(x)
        return [feats[i] for i in self.keep]


def create_segmentation_model(
    backbone: Union[str, nn.Module],
    num_classes: int,
    img_size: Optional[int] = None,
    head_channels: int = 64,
    feature_indices: Optional[Sequence[int]] = None,
    head_norm: str = "group",
    head_dropout: float = 0.0,
    aux_channels: int = 0,
    aux_level: int = 2,
    neck: str = "pyramid",
    head_init: str = "torch",
    **backbone_kwargs,
) -> SegmentationModel:
    """A :class:`SegmentationModel` on ``backbone`` (a timm / freqkit model name or a built model).

    A name is built with ``timm.create_model(name, num_classes=0, **backbone_kwargs)`` (with
    ``img_size`` for ViTs, ``features_only=True`` for other families). Convert a ViT first
    (``freqkit.convert``) and pass the module to segment with a retrofitted backbone. ``head_norm`` ('group' or
    'batch'), ``head_dropout``, ``aux_channels`` (0: no auxiliary FCN head) and ``aux_level`` (the level it
    reads) configure the heads, ``head_init`` ('torch' or 'mmseg') their initialization; ``neck`` (pyramid,
    simple, none; ViTs only) the ViT neck.
    """
    head_kw = dict(
        head_channels=head_channels,
        norm=head_norm,
        dropout=head_dropout,
        aux_channels=aux_channels,
        aux_level=aux_level,
        head_init=head_init,
    )
    import timm  # freqkit's backbones are registered: importing this module ran freqkit/models/__init__.py

    from freqkit.models.fdam_vit import FdamViTDense

    if num_classes < 1:
        raise FreqkitError(f"num_classes must be at least 1, got {num_classes}")
    if isinstance(backbone, str):
        if not timm.is_model(backbone):
            raise FreqkitError(f"unknown backbone {backbone!r}; use a timm or freqkit model name (timm.list_models())")
        kwargs = dict(backbone_kwargs)
        probe = probe_model(backbone, **kwargs)
        if is_vit(probe) or isinstance(probe, FdamViTDense):
            if img_size is not None:
                kwargs["img_size"] = img_size
            if isinstance(probe, FdamViTDense):
                kwargs["neck"] = False  # the segmenter's neck (``neck``) replaces the backbone's own
            backbone = timm.create_model(backbone, pretrained=False, num_classes=0, **kwargs)
        else:
            try:
                net = timm.create_model(backbone, pretrained=False, features_only=True, **kwargs)
            except Exception as err:  # timm raises RuntimeError / TypeError for families without feature support
                raise FreqkitError(
                    f"backbone {backbone!r} has no features_only support in timm ({err}); pick another backbone"
                ) from None
            return _from_feature_net(net, num_classes, **head_kw)
    if neck not in NECKS:
        raise FreqkitError(f"unknown neck {neck!r}; use one of {', '.join(NECKS)}")
    if is_vit(backbone) or isinstance(backbone, FdamViTDense):
        feats = ViTFeatures(backbone, feature_indices, neck=neck, norm=head_norm)
        return SegmentationModel(feats, feats.channels, num_classes, **head_kw)
    if neck != "pyramid":
        raise FreqkitError(
            f"neck={neck!r} applies to ViT backbones; {type(backbone).__name__} gives its own feature levels (use neck='pyramid')"
        )
    if hasattr(backbone, "feature_info") and hasattr(backbone.feature_info, "reduction"):
        return _from_feature_net(backbone, num_classes, **head_kw)
    raise FreqkitError(
        f"{type(backbone).__name__} is neither a timm VisionTransformer nor a features_only model; "
        "pass a timm ViT, or timm.create_model(name, features_only=True)"
    )


def _from_feature_net(net: nn.Module, num_classes: int, **head_kw) -> SegmentationModel:
    reductions = list(net.feature_info.reduction())
    channels = list(net.feature_info.channels())
    keep = [i for i, r in enumerate(reductions) if r >= 4]
    if not keep:
        raise FreqkitError(f"the backbone's feature strides {reductions} have none >= 4; it cannot feed a segmentation head")
    chans = [channels[i] for i in keep]
    level = head_kw.get("aux_level", 2)
    if head_kw.get("aux_channels") and len(chans) <= level:
        raise FreqkitError(
            f"the auxiliary head reads feature level {level}, but the backbone has {len(chans)} of stride >= 4; "
            "set aux_channels=0 or a lower aux_level"
        )
    return SegmentationModel(_FeatureList(net, keep), chans, num_classes, **head_kw)
