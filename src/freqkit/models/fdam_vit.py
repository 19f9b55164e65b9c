"""FDAM vision transformers ("Frequency-Dynamic Attention Modulation for Dense Prediction", ICCV 2025): AttInv + FreqScale in every block.

Two families, both registered with timm when ``freqkit.models`` is imported:

- ``deit_{tiny,small,base}_fdam_patch16_224``: the timm DeiT classifier (CLS token) converted with
  ``freqkit.convert(model, "fdam")``. timm DeiT weights load through ``checkpoint_filter_fn`` with
  every FDAM parameter kept at its (near-identity) init, e.g.
  ``timm.create_model("deit_small_fdam_patch16_224", pretrained=True, pretrained_cfg_overlay=dict(file="deit_small.pth"))``.
- ``fdam_vit_{tiny,small,base}_dense``: the released dense-prediction backbone (``vit_models_freq``):
  no CLS token, LayerScale, the 14 x 14 position embedding resized (bicubic, align_corners=False) to
  the actual grid every forward, no final norm, block outputs at ``block_indices`` (default
  (2, 5, 8, 11)) and the released multi-level neck (2x deconv twice -> stride 4, 2x deconv -> 8,
  identity -> 16, 2x max-pool -> 32), so ``features_only=True`` gives strides 4/8/16/32. The neck
  is built only where it is used (``features_only=True`` or ``neck=True``): ``forward`` (features
  or logits) never touches it, and parameters without gradients would stall DDP.

Released checkpoints: AttInv parameters sit under ``attn.*`` there and under ``attn.filter.*`` here,
LayerScale is ``gamma_1``/``gamma_2`` there and ``ls1.gamma``/``ls2.gamma`` here; the key mapping is
the pure function :func:`remap_released_keys`, used by :func:`checkpoint_filter_fn` (timm's
pretrained loading), :func:`load_fdam_checkpoint` (explicit, strict loading with a list of
missing / unexpected keys) and the conformance builders. No load hooks: ``model.load_state_dict``
takes freqkit names only.
"""

from __future__ import annotations

import logging
import math
from functools import partial
from typing import Any, Callable, Mapping, Optional, Sequence, Union

import torch
from timm.layers import (
    DropPath,
    LayerNorm2dFp32,
    LayerScale,
    Mlp,
    PatchEmbed,
    calculate_drop_path_rates,
    resample_abs_pos_embed,
    trunc_normal_,
)
from timm.models import generate_default_cfgs, register_model
from timm.models._features import feature_take_indices
from timm.models.vision_transformer import VisionTransformer
from timm.models.vision_transformer import checkpoint_filter_fn as _vit_checkpoint_filter_fn
from torch import nn
from torch.utils.checkpoint import checkpoint

from freqkit.errors import FreqkitError
from freqkit.layers._tracing import fx_tracing
from freqkit.layers.attention import Attention
from freqkit.layers.attinv import AttInv
from freqkit.layers.block import FreqBlock
from freqkit.layers.freqscale import FreqScale
from freqkit.models._deit import build_deit, deit_cfg
from freqkit.models.checkpoint import StateDictSource, _unwrap, load_checkpoint
from freqkit.models.convert import convert

__all__ = [
    "FdamVisionTransformer",
    "FdamViTDense",
    "build_fdam_block",
    "remap_released_keys",
    "checkpoint_filter_fn",
    "load_fdam_checkpoint",
]

_logger = logging.getLogger(__name__)

# released AttInv parameter names, stored directly under the attention module there
_ATTINV_NAMES = ("dy_freq", "dy_freq_2", "lf_gamma", "hf_gamma", "dy_freq_starrelu")
# parameters that FDAM adds to a plain ViT (kept at init when a plain checkpoint is loaded)
_FDAM_MARKERS = (".attn.filter.", ".freq_scale_1.", ".freq_scale_2.")
# classification-only tensors of timm / DeiT checkpoints that the dense backbone does not have
_CLASSIFIER_PREFIXES = ("cls_token", "dist_token", "reg_token", "head.", "head_dist.", "norm.", "fc_norm.")
# the released multi-level neck (built only for features_only / neck=True)
_NECK_PREFIXES = ("up1.", "up2.")


def _split_fdam_options(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Pop ``attinv_*`` / ``freqscale_*`` options (convert's naming) out of model kwargs."""
    return {k: kwargs.pop(k) for k in list(kwargs) if k.startswith(("attinv_", "freqscale_"))}


def _layer_options(options: dict[str, Any], prefix: str) -> dict[str, Any]:
    return {k[len(prefix) + 1 :]: v for k, v in options.items() if k.startswith(prefix + "_")}


# ------------------------------------------------------------------------------------------ keys
def remap_released_keys(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Released FDAM key names -> freqkit names; freqkit names pass unchanged (idempotent).

    ``<attn>.dy_freq*`` / ``lf_gamma`` / ``hf_gamma`` -> ``<attn>.filter.*``; a trailing ``gamma_1`` /
    ``gamma_2`` -> ``ls1.gamma`` / ``ls2.gamma``; an mmsegmentation ``backbone.`` prefix is stripped
    and the other top-level parts of a segmentor (decode / auxiliary heads) are dropped.
    """
    keys = list(state_dict)
    if keys and any(k.startswith("backbone.") for k in keys):
        state_dict = {k[len("backbone.") :]: v for k, v in state_dict.items() if k.startswith("backbone.")}
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        parts = key.split(".")
        for i, part in enumerate(parts):
            if part in _ATTINV_NAMES and (i == 0 or parts[i - 1] != "filter"):
                parts.insert(i, "filter")
                break
        if parts[-1] in ("gamma_1", "gamma_2"):
            parts[-1:] = ["ls" + parts[-1][-1], "gamma"]
        out[".".join(parts)] = value
    return out


def _resize_pos_embed(pos: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """(1, h*w, C) square-grid position embedding -> (1, H*W, C) on ``grid``, bicubic, align_corners=False."""
    n = pos.shape[1]
    side = math.isqrt(n)
    if side * side != n:
        raise FreqkitError(f"position embedding with {n} spatial entries is not a square grid; cannot resize it to {grid}")
    # no antialias: the released loader resizes with plain bicubic interpolation
    return resample_abs_pos_embed(pos, new_size=list(grid), old_size=[side, side], num_prefix_tokens=0, antialias=False)


def _adapt_pos_embed(sd: dict[str, torch.Tensor], model: nn.Module) -> None:
    """Resize a checkpoint's pos_embed to the dense model's (no prefix) grid, dropping CLS / distill entries."""
    if "pos_embed" not in sd or not isinstance(model, FdamViTDense):
        return
    pos = sd["pos_embed"]
    n = pos.shape[1]
    drop = next((p for p in (0, 1, 2) if math.isqrt(n - p) ** 2 == n - p), 0)
    # the released loader drops the class-token entry of a DeiT checkpoint the same way
    sd["pos_embed"] = _resize_pos_embed(pos[:, drop:], model.pos_grid)


def checkpoint_filter_fn(state_dict: Mapping[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Map a released FDAM checkpoint, a timm / DeiT ViT checkpoint, or a freqkit one onto ``model``.

    Used by timm's pretrained loading (``pretrained_cfg_overlay=dict(file=...)``). FDAM parameters,
    LayerScale gammas and neck weights that the checkpoint lacks are taken from the model (kept at
    their init) and logged; classification-only tensors the model lacks are dropped.
    """
    sd = remap_released_keys(_unwrap(dict(state_dict), "state dict"))
    own = model.state_dict()
    if isinstance(model, FdamViTDense):
        # classification tensors, and the neck of a segmentation checkpoint when this model has none
        sd = {k: v for k, v in sd.items() if not (k.startswith(_CLASSIFIER_PREFIXES + _NECK_PREFIXES) and k not in own)}
        _adapt_pos_embed(sd, model)
    else:
        sd = _vit_checkpoint_filter_fn(sd, model)
    kept = []
    for key, value in own.items():
        if key in sd:
            continue
        dotted = "." + key
        if any(m in dotted for m in _FDAM_MARKERS) or ".ls1." in dotted or ".ls2." in dotted or key.startswith(("up1.", "up2.")):
            sd[key] = value
            kept.append(key)
    if kept:
        _logger.info("checkpoint lacks %d FDAM / LayerScale / neck tensors; kept at init: %s", len(kept), ", ".join(kept[:8]))
    return sd


def load_fdam_checkpoint(model: nn.Module, source: StateDictSource, strict: bool = True) -> tuple[list[str], list[str]]:
    """Load a released FDAM checkpoint into an FDAM model; returns (missing, unexpected) keys.

    ``source`` is a ``.safetensors`` file, a weights-only torch file (``.pth``; wrappers such as
    ``state_dict`` / ``model`` and mmsegmentation's ``backbone.`` prefix are understood) or a state
    dict. Released names are mapped with :func:`remap_released_keys` and the position embedding is
    resized to the model's grid. With ``strict`` (default) any missing, unexpected or mis-shaped key
    raises one FreqkitError naming them; with ``strict=False`` the matching tensors are loaded and
    the lists are returned (e.g. the neck ``up*`` keys of a checkpoint trained without it).
    """

    def filter_fn(sd: dict[str, torch.Tensor], m: nn.Module) -> dict[str, torch.Tensor]:
        sd = remap_released_keys(sd)
        if strict and isinstance(m, FdamViTDense) and not m.has_neck and any(k.startswith(_NECK_PREFIXES) for k in sd):
            raise FreqkitError(
                "checkpoint holds the multi-level neck (up1 / up2) but the model has none; "
                "create it with features_only=True or neck=True, or load with strict=False"
            )
        _adapt_pos_embed(sd, m)
        return sd

    return load_checkpoint(model, source, filter_fn=filter_fn, strict=strict)


# ------------------------------------------------------------------------------------------ blocks
def build_fdam_block(
    dim: int,
    num_heads: int,
    mlp_ratio: float = 4.0,
    qkv_bias: bool = True,
    init_values: Optional[float] = 1e-4,
    drop_path: float = 0.0,
    attn_drop: float = 0.0,
    proj_drop: float = 0.0,
    norm_layer: Callable[[int], nn.Module] = partial(nn.LayerNorm, eps=1e-6),
    act_layer: Callable[[], nn.Module] = nn.GELU,
    fused: bool = True,
    attinv: Optional[dict[str, Any]] = None,
    freqscale: Optional[dict[str, Any]] = None,
    fdam: bool = True,
) -> FreqBlock:
    """The released FDAM block (``Layer_scale_init_Block``) as a FreqBlock: (B, N, C) -> (B, N, C).

    x = x + drop_path(ls1(FS1(a) + a)), a = attn(norm1(x)) with AttInv; same with the MLP and FS2.
    ``attinv`` / ``freqscale`` are keyword arguments of AttInv / FreqScale; ``fused=False`` puts the
    attention and both FreqScales on their reference paths. ``fdam=False``: the same LayerScale block
    without AttInv and FreqScale (the plain DeiT-III block of the released baseline).
    """
    filt = AttInv(dim, num_heads, **(attinv or {})) if fdam else None
    attn = Attention(dim, num_heads, qkv_bias=qkv_bias, attn_drop=attn_drop, proj_drop=proj_drop, filter=filt, fused=fused)
    return FreqBlock(
        attn=attn,
        mlp=Mlp(dim, int(dim * mlp_ratio), act_layer=act_layer, drop=proj_drop),
        norm1=norm_layer(dim),
        norm2=norm_layer(dim),
        ls1=LayerScale(dim, init_values) if init_values is not None else None,
        ls2=LayerScale(dim, init_values) if init_values is not None else None,
        drop_path1=DropPath(drop_path) if drop_path > 0 else None,
        drop_path2=DropPath(drop_path) if drop_path > 0 else None,
        freq_scale_1=FreqScale(dim, **{"fused": fused, **(freqscale or {})}) if fdam else None,
        freq_scale_2=FreqScale(dim, **{"fused": fused, **(freqscale or {})}) if fdam else None,
    )


# ------------------------------------------------------------------------------------------ models
class FdamVisionTransformer(VisionTransformer):
    """timm VisionTransformer (B, 3, H, W) -> logits with FDAM (AttInv + FreqScale) in ``fdam_blocks``
    (default all); ``attinv_*`` / ``freqscale_*`` keyword arguments configure the layers."""

    def __init__(self, *args: Any, fdam_blocks: Optional[Sequence[int]] = None, **kwargs: Any) -> None:
        options = _split_fdam_options(kwargs)
        super().__init__(*args, **kwargs)
        convert(self, "fdam", blocks=fdam_blocks, **options)


class FdamViTDense(nn.Module):
    """Released FDAM dense backbone (``vit_models_freq``): images (B, 3, H, W) -> multi-level maps.

    ``forward_intermediates`` returns the outputs of ``block_indices`` as (B, C, H/p, W/p) maps,
    through the neck (strides p/4, p/2, p, 2p) when ``neck=True``; ``forward_features`` returns the
    last block's map (B, C, H/p, W/p) and ``forward`` pooled features or logits (``num_classes``),
    as timm's convolutional backbones do. ``fdam=False`` builds the same backbone without AttInv and
    FreqScale (the released DeiT-III baseline, ``vit_models``).
    """

    def __init__(
        self,
        img_size: Union[int, tuple[int, int]] = 224,
        patch_size: int = 16,
        in_chans: int = 3,
        embed_dim: int = 384,
        depth: int = 12,
        num_heads: int = 6,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        init_scale: Optional[float] = 1e-4,
        block_indices: Optional[Sequence[int]] = None,
        neck: bool = False,
        num_classes: int = 0,
        global_pool: str = "avg",
        fused: bool = True,
        fdam: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        options = _split_fdam_options(kwargs)
        if kwargs:
            raise FreqkitError(f"FdamViTDense: unknown arguments {sorted(kwargs)}; FDAM options are attinv_* and freqscale_*")
        if options and not fdam:
            raise FreqkitError(
                f"FdamViTDense: {sorted(options)} configure FDAM, but fdam=False builds none; drop them or pass fdam=True"
            )
        if embed_dim % num_heads != 0:
            raise FreqkitError(f"FdamViTDense: embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
        if block_indices is None:
            # evenly spaced, ending at the last block: (2, 5, 8, 11) for 12 blocks (released default)
            block_indices = [max(0, round((i + 1) * depth / 4) - 1) for i in range(4)]
        block_indices = [int(i) for i in block_indices]
        if not block_indices or any(not 0 <= i < depth for i in block_indices) or sorted(block_indices) != block_indices:
            raise FreqkitError(
                f"FdamViTDense: block_indices {block_indices} must be non-decreasing block numbers in [0, {depth})"
            )
        if neck and len(block_indices) != 4:
            raise FreqkitError(
                f"FdamViTDense: the neck needs 4 block_indices (got {block_indices}); pass neck=False for plain stride-{patch_size} outputs"
            )
        _check_pool(global_pool)
        img = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
        if img[0] % patch_size or img[1] % patch_size:
            raise FreqkitError(f"FdamViTDense: img_size {img} is not divisible by patch_size {patch_size}")
        self.patch_size = patch_size
        self.pos_grid = (img[0] // patch_size, img[1] // patch_size)
        self.num_classes = num_classes
        self.global_pool = global_pool
        self.num_features = self.head_hidden_size = self.embed_dim = embed_dim
        self.num_prefix_tokens = 0
        self.block_indices = block_indices
        self.has_neck = neck
        self.grad_checkpointing = False

        self.patch_embed = PatchEmbed(
            img_size=img, patch_size=patch_size, in_chans=in_chans, embed_dim=embed_dim, flatten=False, strict_img_size=False
        )
        self.pos_embed = nn.Parameter(torch.zeros(1, self.pos_grid[0] * self.pos_grid[1], embed_dim))
        dpr = calculate_drop_path_rates(drop_path_rate, depth)
        self.blocks = nn.Sequential(
            *[
                build_fdam_block(
                    embed_dim,
                    num_heads,
                    mlp_ratio,
                    qkv_bias,
                    init_values=init_scale,
                    drop_path=dpr[i],
                    attn_drop=attn_drop_rate,
                    fused=fused,
                    attinv=_layer_options(options, "attinv"),
                    freqscale=_layer_options(options, "freqscale"),
                    fdam=fdam,
                )
                for i in range(depth)
            ]
        )
        if neck:
            c = embed_dim
            self.up1 = nn.Sequential(
                nn.ConvTranspose2d(c, c, 2, 2), LayerNorm2dFp32(c, eps=1e-6), nn.GELU(), nn.ConvTranspose2d(c, c, 2, 2)
            )
            self.up2 = nn.Sequential(nn.ConvTranspose2d(c, c, 2, 2))
            self.up3 = nn.Identity()
            self.up4 = nn.MaxPool2d(kernel_size=2, stride=2)
            reductions = [patch_size / 4, patch_size / 2, patch_size, patch_size * 2]
            reductions = [int(r) if float(r).is_integer() else r for r in reductions]
            self.feature_info = [dict(module=f"up{i + 1}", num_chs=c, reduction=r) for i, r in enumerate(reductions)]
        else:
            self.feature_info = [dict(module=f"blocks.{b}", num_chs=embed_dim, reduction=patch_size) for b in block_indices]
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        self._init_weights()

    def _init_weights(self) -> None:
        trunc_normal_(self.pos_embed, std=0.02)
        for name, m in self.named_modules():
            if isinstance(m, nn.Linear) and ".filter." not in f".{name}." and ".reweight." not in f".{name}.":
                trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.ConvTranspose2d):
                # He init on fan-out, as the released neck
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
                nn.init.zeros_(m.bias)

    # ---------------------------------------------------------------------------------- timm API
    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        return {"pos_embed"}

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict:
        return dict(stem=r"^pos_embed|patch_embed", blocks=[(r"^blocks\.(\d+)", None), (r"^up\d", (99999,))])

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        """Replace the head by a fresh (num_classes) linear layer; 0 gives pooled features."""
        self.num_classes = num_classes
        if global_pool is not None:
            _check_pool(global_pool)
            self.global_pool = global_pool
        self.head = nn.Linear(self.embed_dim, num_classes) if num_classes > 0 else nn.Identity()

    # ---------------------------------------------------------------------------------- forward
    def _embed(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """Images (B, 3, H, W) -> tokens (B, H/p * W/p, C) with position embedding, and the grid."""
        if not fx_tracing():  # under torch.fx the sizes are proxies
            if x.ndim != 4 or x.shape[1] != self.patch_embed.proj.in_channels:
                raise FreqkitError(
                    f"FdamViTDense expects images (B, {self.patch_embed.proj.in_channels}, H, W), got {tuple(x.shape)}"
                )
            h, w = x.shape[-2:]
            if h % self.patch_size or w % self.patch_size:
                raise FreqkitError(
                    f"FdamViTDense: image size {h}x{w} is not divisible by the patch size {self.patch_size}; pad or resize the input"
                )
        x = self.patch_embed(x)  # (B, C, h, w)
        grid = (x.shape[-2], x.shape[-1])
        x = x.flatten(2).transpose(1, 2)
        # no antialias: the released model resizes with plain bicubic interpolation
        pos = resample_abs_pos_embed(
            self.pos_embed, new_size=list(grid), old_size=list(self.pos_grid), num_prefix_tokens=0, antialias=False
        )
        return x + pos, grid

    def _run_blocks(
        self, x: torch.Tensor, grid: tuple[int, int], last: int, take: Sequence[int] = ()
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        outs = []
        for i, blk in enumerate(self.blocks[: last + 1]):
            if self.grad_checkpointing and torch.is_grad_enabled():
                x = checkpoint(blk, x, grid_size=grid, num_prefix_tokens=0, use_reentrant=False)
            else:
                x = blk(x, grid_size=grid, num_prefix_tokens=0)
            if i in take:
                outs.append(x)
        return x, outs

    def _to_map(self, tokens: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """Tokens (B, h*w, C) -> map (B, C, h, w)."""
        return tokens.transpose(1, 2).reshape(tokens.shape[0], -1, grid[0], grid[1])

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: Optional[Union[int, Sequence[int]]] = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> Union[list[torch.Tensor], tuple[torch.Tensor, list[torch.Tensor]]]:
        """Feature levels (B, C, H_l, W_l) for ``indices`` (positions in ``feature_info``; default all)."""
        if norm:
            raise FreqkitError("FdamViTDense has no final norm (released backbone); call forward_intermediates with norm=False")
        if output_fmt not in ("NCHW", "NLC"):
            raise FreqkitError(f"FdamViTDense: output_fmt must be 'NCHW' or 'NLC', got {output_fmt!r}")
        levels, _ = feature_take_indices(len(self.block_indices), indices)
        blocks = [self.block_indices[i] for i in levels]
        tokens, grid = self._embed(x)
        if self.has_neck and 3 in levels and not fx_tracing() and min(grid) < 2:
            raise FreqkitError(
                f"FdamViTDense: the stride-{2 * self.patch_size} level max-pools the {grid[0]}x{grid[1]} patch grid and needs "
                "at least 2 x 2 patches; use a larger image or leave level 3 out of indices"
            )
        last = max(blocks) if (stop_early or intermediates_only) else len(self.blocks) - 1
        tokens, outs = self._run_blocks(tokens, grid, last, take=blocks)
        by_block = dict(zip(sorted(set(blocks)), outs))
        maps = []
        for level, blk in zip(levels, blocks):
            m = self._to_map(by_block[blk], grid)
            if self.has_neck:
                m = getattr(self, f"up{level + 1}")(m)
            maps.append(m.flatten(2).transpose(1, 2) if output_fmt == "NLC" else m.contiguous())
        return maps if intermediates_only else (self._to_map(tokens, grid), maps)

    def prune_intermediate_layers(
        self, indices: Union[int, Sequence[int]] = 1, prune_norm: bool = False, prune_head: bool = True
    ) -> list[int]:
        """Drop the blocks after the last one that ``indices`` (feature levels) need; returns the levels."""
        levels, _ = feature_take_indices(len(self.block_indices), indices)
        self.blocks = self.blocks[: max(self.block_indices[i] for i in levels) + 1]
        if prune_head:
            self.reset_classifier(0)
        return levels

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, H, W) -> the last block's map (B, C, H/p, W/p) (no CLS token, no final norm)."""
        tokens, grid = self._embed(x)
        return self._to_map(self._run_blocks(tokens, grid, len(self.blocks) - 1)[0], grid)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Map (B, C, h, w) -> mean-pooled features (B, C) or logits (B, num_classes); no pooling with global_pool=''."""
        x = x.mean(dim=(-2, -1)) if self.global_pool == "avg" else x
        x = self.head_drop(x)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, H, W) -> logits (B, num_classes), or pooled features (B, C) when num_classes = 0."""
        return self.forward_head(self.forward_features(x))


def _check_pool(global_pool: str) -> None:
    if global_pool not in ("avg", ""):
        raise FreqkitError(f"FdamViTDense: global_pool {global_pool!r} is not supported; use 'avg' or '' (no pooling)")


# ------------------------------------------------------------------------------------------ registry


_cfg = deit_cfg


default_cfgs = generate_default_cfgs(
    {
        "deit_tiny_fdam_patch16_224": _cfg(),
        "deit_small_fdam_patch16_224": _cfg(),
        "deit_base_fdam_patch16_224": _cfg(),
        # backbones without a classifier; forward_features maps are (B, C, 14, 14) at 224
        "fdam_vit_tiny_dense": _cfg(num_classes=0, fixed_input_size=False, crop_pct=1.0, pool_size=(14, 14)),
        "fdam_vit_small_dense": _cfg(num_classes=0, fixed_input_size=False, crop_pct=1.0, pool_size=(14, 14)),
        "fdam_vit_base_dense": _cfg(num_classes=0, fixed_input_size=False, crop_pct=1.0, pool_size=(14, 14)),
    }
)


def _create_fdam_deit(variant: str, pretrained: bool = False, **kwargs: Any) -> FdamVisionTransformer:
    return build_deit(FdamVisionTransformer, variant, pretrained, checkpoint_filter_fn, kwargs.pop("out_indices", 3), **kwargs)


def _create_fdam_dense(variant: str, pretrained: bool = False, **kwargs: Any) -> FdamViTDense:
    out_indices = kwargs.pop("out_indices", (0, 1, 2, 3))
    # the neck serves the feature levels only: build it for features_only (or when asked)
    kwargs.setdefault("neck", bool(kwargs.get("features_only", False)))
    return build_deit(FdamViTDense, variant, pretrained, checkpoint_filter_fn, out_indices, **kwargs)


@register_model
def deit_tiny_fdam_patch16_224(pretrained: bool = False, **kwargs: Any) -> FdamVisionTransformer:
    """DeiT-Tiny (192 channels, 3 heads, 12 blocks) with FDAM in every block."""
    return _create_fdam_deit(
        "deit_tiny_fdam_patch16_224", pretrained, **dict(dict(patch_size=16, embed_dim=192, depth=12, num_heads=3), **kwargs)
    )


@register_model
def deit_small_fdam_patch16_224(pretrained: bool = False, **kwargs: Any) -> FdamVisionTransformer:
    """DeiT-Small (384 channels, 6 heads, 12 blocks) with FDAM in every block."""
    return _create_fdam_deit(
        "deit_small_fdam_patch16_224", pretrained, **dict(dict(patch_size=16, embed_dim=384, depth=12, num_heads=6), **kwargs)
    )


@register_model
def deit_base_fdam_patch16_224(pretrained: bool = False, **kwargs: Any) -> FdamVisionTransformer:
    """DeiT-Base (768 channels, 12 heads, 12 blocks) with FDAM in every block."""
    return _create_fdam_deit(
        "deit_base_fdam_patch16_224", pretrained, **dict(dict(patch_size=16, embed_dim=768, depth=12, num_heads=12), **kwargs)
    )


@register_model
def fdam_vit_tiny_dense(pretrained: bool = False, **kwargs: Any) -> FdamViTDense:
    """Released FDAM dense backbone, tiny (192 channels, 3 heads, 12 blocks), 4-level neck."""
    return _create_fdam_dense("fdam_vit_tiny_dense", pretrained, **dict(dict(embed_dim=192, depth=12, num_heads=3), **kwargs))


@register_model
def fdam_vit_small_dense(pretrained: bool = False, **kwargs: Any) -> FdamViTDense:
    """Released FDAM dense backbone, small (384 channels, 6 heads, 12 blocks), 4-level neck."""
    return _create_fdam_dense("fdam_vit_small_dense", pretrained, **dict(dict(embed_dim=384, depth=12, num_heads=6), **kwargs))


@register_model
def fdam_vit_base_dense(pretrained: bool = False, **kwargs: Any) -> FdamViTDense:
    """Released FDAM dense backbone, base (768 channels, 12 heads, 12 blocks), 4-level neck."""
    return _create_fdam_dense("fdam_vit_base_dense", pretrained, **dict(dict(embed_dim=768, depth=12, num_heads=12), **kwargs))
