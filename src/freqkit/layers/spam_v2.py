"""SPAM v2 (SPANetV2, arXiv 2503.23947; ``ExSPAM`` in the released code): spectral-adaptive modulation.

On channels-last maps x (B, H, W, C), with n = 4 scales and G = C / n channels per scale:

    q = GELU(query(x));  c = ctx(x) split into n contiguous groups of G channels
    z_i = irfft2(rfft2(dwconv_{3 + 2i}(c_i)) * sigmoid(theta_i), s=(H, W))   (ortho, float32)
    s = proj.3(GELU(GroupNorm(proj.0(z))));  y = proj_out(q * s)

theta_i (G, H0, W0 // 2 + 1) are learnable spectral gains, resized (bicubic, align_corners=True) to
(H, W // 2 + 1) when the grid differs. ``proj.0`` is a 1x1 conv with G groups, so each group sees n
channels of z: with ``layout="interleave"`` (the released ExSPAM) channel n g + i of z is scale i's
channel g (one group = the n scales of one channel); ``layout="head_major"`` (the later released
variant, which stores one ``filter`` and ``local_convs.<i>``; those keys are mapped on load) keeps
the groups one after the other. ``gain="scaled_sigmoid"`` uses sigmoid(alpha * theta) with one
learnable scalar alpha (that variant's ``scale.alpha``).

Fast path (``fused=True``, default): the channel order that ``proj.0`` wants is produced for free by
permuting the rows of the ``ctx`` weight, so no activation is ever shuffled; the n depthwise convs
run as one depthwise conv whose kernels are the released ones zero-padded to the largest size
(zero taps add exact zeros), and all gains are applied in one rfft2 / irfft2 over every channel.
The assembled kernel and the resized gains are cached per grid size in eval mode under no_grad,
keyed on each parameter's version counter and storage, so they are never stale after an update.
``fused=False`` runs the reference path, the released algorithm (n convs, n FFTs, explicit interleave).
"""

from __future__ import annotations

import re
from typing import Optional, Union

import torch
import torch.nn.functional as F
from timm.layers import register_notrace_module
from torch import nn

from freqkit.errors import FreqkitError
from freqkit.layers._autocast import no_autocast
from freqkit.layers._cache import DerivedCache
from freqkit.layers._tracing import has_hooks, no_graph

__all__ = ["SPAMv2", "checkpoint_layout"]

_LAYOUTS = ("interleave", "head_major")
_GAINS = ("sigmoid", "scaled_sigmoid")


# a leaf for torch.fx (timm's feature extraction and FX tests): the gains are resized to the
# concrete grid only when it differs from the stored one, a branch on sizes that tracing cannot take
@register_notrace_module
class SPAMv2(nn.Module):
    """SPAM v2 token mixer on channels-last maps: (B, H, W, C) -> (B, H, W, C), any H and W.

    Released key names: ``query.0``, ``ctx``, ``local_conv_{1..n}``, ``filter_{1..n}``, ``proj.0``,
    ``proj.1``, ``proj.3``, ``proj_out`` (plus ``alpha`` with ``gain="scaled_sigmoid"``).
    """

    def __init__(
        self,
        dim: int,
        num_scales: int = 4,
        expand_ratio: int = 2,
        size: Union[int, tuple[int, int]] = 14,
        layout: str = "interleave",
        gain: str = "sigmoid",
        fused: bool = True,
        proj_drop: float = 0.0,
        device: Optional[torch.device] = None,
        dtype: Optional[torch.dtype] = None,
    ) -> None:
        super().__init__()
        for name, value, allowed in (("layout", layout, _LAYOUTS), ("gain", gain, _GAINS)):
            if value not in allowed:
                raise FreqkitError(f"SPAMv2: unknown {name} {value!r}; use one of {', '.join(allowed)}")
        if num_scales < 1 or dim % num_scales != 0:
            raise FreqkitError(f"SPAMv2: dim {dim} is not divisible by num_scales {num_scales}; choose dim = num_scales * k")
        dd = {"device": device, "dtype": dtype}
        h0, w0 = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
        group = dim // num_scales
        self.dim, self.num_scales, self.group = dim, num_scales, group
        self.size = (h0, w0)
        self.layout, self.gain, self.fused = layout, gain, bool(fused)
        self.query = nn.Sequential(nn.Linear(dim, dim, bias=False, **dd), nn.GELU())
        self.ctx = nn.Linear(dim, dim, bias=False, **dd)
        for i in range(num_scales):
            k = 3 + 2 * i
            setattr(self, f"local_conv_{i + 1}", nn.Conv2d(group, group, k, padding=k // 2, groups=group, **dd))
            setattr(self, f"filter_{i + 1}", nn.Parameter(torch.randn(group, h0, w0 // 2 + 1, **dd) * 0.02))
        if gain == "scaled_sigmoid":
            self.alpha = nn.Parameter(torch.ones(1, **dd))
        self.proj = nn.Sequential(
            nn.Conv2d(dim, dim * expand_ratio, 1, groups=group, bias=False, **dd),
            nn.GroupNorm(1, dim * expand_ratio, **dd),
            nn.GELU(),
            nn.Conv2d(dim * expand_ratio, dim, 1, bias=False, **dd),
        )
        self.proj_out = nn.Linear(dim, dim, bias=False, **dd)
        self.proj_drop = nn.Dropout(proj_drop)
        # channel j of z (what proj.0 reads) is channel perm[j] of the group-after-group order
        j = torch.arange(dim)
        perm = (j % num_scales) * group + j // num_scales if layout == "interleave" else j
        self.register_buffer("perm", perm, persistent=False)
        self._cache = DerivedCache()
        self.register_load_state_dict_pre_hook(_map_head_major_keys)

    def extra_repr(self) -> str:
        return (
            f"dim={self.dim}, num_scales={self.num_scales}, size={self.size}, layout={self.layout!r}, "
            f"gain={self.gain!r}, fused={self.fused}"
        )

    def _convs(self) -> list[nn.Conv2d]:
        return [getattr(self, f"local_conv_{i + 1}") for i in range(self.num_scales)]

    def _filters(self) -> list[torch.Tensor]:
        return [getattr(self, f"filter_{i + 1}") for i in range(self.num_scales)]

    # ---- gains and kernels --------------------------------------------------------------------
    def gains(self, size: tuple[int, int]) -> torch.Tensor:
        """The spectral gains (C, H, W // 2 + 1) float32 at grid (H, W), groups one after the other."""
        return self._gain_of(torch.cat(self._filters()), size)

    def _gain_of(self, theta: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        h, w = size
        theta = theta.float()
        if theta.shape[-2:] != (h, w // 2 + 1):
            theta = F.interpolate(theta[None], size=(h, w // 2 + 1), mode="bicubic", align_corners=True)[0]
        if self.gain == "scaled_sigmoid":
            theta = self.alpha.float() * theta
        return torch.sigmoid(theta)

    def _fused_gains(self, h: int, w: int) -> torch.Tensor:
        params = self._filters() + ([self.alpha] if self.gain == "scaled_sigmoid" else [])
        return self._cache.derived(
            self, ("gain", h, w), params, lambda: self._gain_of(torch.cat(self._filters())[self.perm], (h, w))
        )

    def _fused_kernel(self) -> tuple[torch.Tensor, torch.Tensor]:
        convs = self._convs()
        params = [p for c in convs for p in (c.weight, c.bias)]

        def build() -> tuple[torch.Tensor, torch.Tensor]:
            big = convs[-1].weight.shape[-1]
            weight = torch.cat([F.pad(c.weight, [(big - c.weight.shape[-1]) // 2] * 4) for c in convs])
            bias = torch.cat([c.bias for c in convs])
            return weight[self.perm], bias[self.perm]

        return self._cache.derived(self, ("kernel",), params, build)

    # ---- forward ------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[-1] != self.dim:
            raise FreqkitError(
                f"SPAMv2 expects channels-last maps (B, H, W, {self.dim}), got {tuple(x.shape)}; "
                "permute (B, C, H, W) maps with x.permute(0, 2, 3, 1)"
            )
        if not self.fused:
            q = self.query(x)
            s = self.proj(self._mix_reference(x)).permute(0, 2, 3, 1)
            return self.proj_drop(self.proj_out(q * s))
        inplace = self._inplace(x)
        q = self._act(self.query[1], self.query[0](x), inplace)
        s = self._proj_fused(self._mix_fused(x, inplace), inplace)
        # s is a fresh contiguous map in inference: the product goes into it (the same products as q * s)
        return self.proj_drop(self.proj_out(s.mul_(q) if inplace and s.is_contiguous() else q * s))

    def _inplace(self, x: torch.Tensor) -> bool:
        """True when the fused path may overwrite its own intermediates: no autograd graph, no hooks inside.

        On CPU every fresh activation-sized buffer pays a page fault per 4 KiB, which at stage-1 sizes
        costs more than the elementwise work; hooks on the sub-modules would see the values change.
        """
        return no_graph(x, *self.parameters()) and not any(has_hooks(m) for m in (self.query[1], self.proj[2]))

    @staticmethod
    def _act(act: nn.Module, t: torch.Tensor, inplace: bool) -> torch.Tensor:
        """``act(t)`` for an nn.GELU, written into t when ``inplace`` (t is then a temporary of the caller)."""
        if inplace and isinstance(act, nn.GELU):
            return torch._C._nn.gelu_(t, approximate=act.approximate)
        return act(t)

    def _proj_fused(self, z: torch.Tensor, inplace: bool = False) -> torch.Tensor:
        """``self.proj(z)`` of z (B, C, H, W), returned channels last (B, H, W, C); on CPU both 1x1 convs are matrix products.

        PyTorch's CPU convolution runs ``proj.0`` (C / n groups of n inputs) as one small GEMM per group (C / n
        calls per layer), while (G, out/G, n) @ (B, G, n, H W) is one batched product with the same sums; and
        ``proj.3`` as a product with the (H W, 2C) view writes channels-last memory directly, so ``q * s`` and
        ``proj_out`` read contiguous tensors instead of a permuted NCHW map. cuDNN runs the convs well: other
        devices keep them.
        """
        conv0, norm, act, conv3 = self.proj
        if z.device.type != "cpu" or conv0.bias is not None or conv3.bias is not None:
            return self.proj(z).permute(0, 2, 3, 1)
        b, c, h, w = z.shape
        groups = conv0.groups
        weight0 = conv0.weight.view(groups, conv0.out_channels // groups, c // groups).to(z.dtype)
        y = torch.matmul(weight0, z.reshape(b, groups, c // groups, h * w)).view(b, conv0.out_channels, h, w)
        y = self._act(act, norm(y), inplace)
        weight3 = conv3.weight.view(conv3.out_channels, conv3.in_channels).to(y.dtype)
        # bmm reads the transposed view in place (a 2D product would first copy it to fold the batch)
        s = torch.bmm(y.view(b, conv0.out_channels, h * w).mT, weight3.t().expand(b, -1, -1))
        return s.view(b, h, w, conv3.out_channels)

    def _mix_fused(self, x: torch.Tensor, inplace: bool = False) -> torch.Tensor:
        """z (B, C, H, W) contiguous, in proj.0's channel order, from one conv and one FFT pair."""
        b, h, w, _ = x.shape
        ctx_weight = self.ctx.weight
        if self.layout != "head_major":
            ctx_weight = self._cache.derived(self, ("ctx",), [ctx_weight], lambda: self.ctx.weight[self.perm])
        # W x^T straight into (B, C, H W): the conv and the FFTs then run on contiguous NCHW maps
        c = torch.matmul(ctx_weight, x.reshape(b, h * w, self.dim).mT).reshape(b, self.dim, h, w)
        weight, bias = self._fused_kernel()
        conv = F.conv2d(c, weight.to(c.dtype), bias.to(c.dtype), padding=weight.shape[-1] // 2, groups=self.dim)
        gains = self._fused_gains(h, w)
        with no_autocast(x.device):
            spec = torch.fft.rfft2(conv.float(), norm="ortho")
            spec = spec.mul_(gains) if inplace else spec * gains
            z = torch.fft.irfft2(spec, s=(h, w), norm="ortho")
        return z.to(x.dtype)

    def _mix_reference(self, x: torch.Tensor) -> torch.Tensor:
        """The released algorithm: per scale conv, rfft2 * sigmoid(resized theta), irfft2, then the layout."""
        b, h, w, _ = x.shape
        groups = self.ctx(x).reshape(b, h, w, self.num_scales, self.group).permute(3, 0, 4, 1, 2)
        outs = []
        for i, (conv, theta) in enumerate(zip(self._convs(), self._filters())):
            gain = self._gain_of(theta, (h, w))
            with no_autocast(x.device):
                spec = torch.fft.rfft2(conv(groups[i]).float(), norm="ortho") * gain
                outs.append(torch.fft.irfft2(spec, s=(h, w), norm="ortho").to(x.dtype))
        stack_dim = 2 if self.layout == "interleave" else 1
        return torch.stack(outs, dim=stack_dim).reshape(b, self.dim, h, w)


def checkpoint_layout(state_dict: dict, prefix: str = "") -> Optional[str]:
    """Which released SPAM v2 layout a state dict holds under ``prefix``: "interleave" (released
    ExSPAM keys ``filter_<i>``, ``local_conv_<i>``; freqkit saves these names for both layouts),
    "head_major" (the later variant: one ``filter``, ``local_convs.<i>``), or None (no SPAM v2 keys)."""
    keys = [k[len(prefix) :] for k in state_dict if k.startswith(prefix)]
    if any(k == "filter" or k.endswith("token_mixer.filter") or re.search(r"(^|\.)local_convs\.\d+\.", k) for k in keys):
        return "head_major"
    if any(re.search(r"(^|\.)filter_\d+$", k) for k in keys):
        return "interleave"
    return None


def _map_head_major_keys(module: SPAMv2, state_dict: dict, prefix: str, *args) -> None:
    """Load pre-hook: the later released variant's ``filter`` / ``local_convs.<i>`` / ``scale.alpha``."""
    layout = checkpoint_layout(state_dict, prefix)
    # filter_<i> keys are also what freqkit saves for either layout: only the variant's own keys are decisive
    if layout == "head_major" and module.layout != "head_major":
        raise FreqkitError(
            f"SPAMv2 at {prefix or 'root'!r}: the checkpoint uses the {layout!r} channel layout but the module was built "
            f"with layout={module.layout!r}; build it with layout={layout!r}"
        )
    whole = state_dict.pop(f"{prefix}filter", None)
    if whole is not None:
        for i, part in enumerate(whole.chunk(module.num_scales)):
            state_dict[f"{prefix}filter_{i + 1}"] = part
    for key in [k for k in state_dict if k.startswith(f"{prefix}local_convs.")]:
        idx, _, rest = key[len(f"{prefix}local_convs.") :].partition(".")
        state_dict[f"{prefix}local_conv_{int(idx) + 1}.{rest}"] = state_dict.pop(key)
    alpha = state_dict.pop(f"{prefix}scale.alpha", None)
    # that variant always stores alpha; its submitted forward ignores it (plain sigmoid)
    if alpha is not None and module.gain == "scaled_sigmoid":
        state_dict[f"{prefix}alpha"] = alpha
