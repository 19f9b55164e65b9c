"""FreqScale (FDAM, FDAM supplementary, Sec. E; released ``GroupDynamicScale``): learned real filters on the 2D
spectrum of a feature map, mixed per sample by a small routing MLP.

For a map x (B, C, H, W) with rfft2 half-plane (H, W//2+1):

    X = rfft2(float32(x), norm="ortho")
    K = the filter bank, resized bicubic (align_corners=True) from (S, S//2+1) to (H, W//2+1)
    r = tanh(fc2(StarReLU(fc1(mean_hw(x)))))            routing, no biases, hidden C // reduction
    W[b, c] = sum_f r[b, group(c), f] K[f, c mod (C/g)]  real per-sample filter
    y = irfft2(X * W, s=(H, W), norm="ortho")           returned in x's dtype; the caller adds x

Modes (parameter counts for C = 384, S = 14, n = 4, g = 16, reduction 16, as in the released DeiT-S configuration):
- ``group`` (released): bank (n, C/g, S, S//2+1), routing C -> C/16 -> g*n read as (g, n): 21,506.
- ``dynamic``: bank (n, C, S, S//2+1), routing C -> C/16 -> n (one group): 181,346.
- ``static``: one filter per channel (C, S, S//2+1), no routing: 43,008.

Two exact implementations of the transform pair, both over dims (1, 2) of the channels-last
(B, H, W, C) view of the tokens (no transposes): ``fft`` (torch.fft) and ``matmul`` (the real DFT as
four small real matrix products, see :func:`dft_matrices`). ``auto`` uses ``matmul`` while exporting
(the legacy ONNX exporter has no FFT) and on CPU for grids up to 2W + 4H <= 300 (2.6x faster than
pocketfft at 14 x 14), ``fft`` otherwise (cuFFT on GPU). The bicubic resize of the bank is applied as
two constant interpolation matrices, the exact linear map of ``F.interpolate(..., mode="bicubic",
align_corners=True)``, which also exports as plain matmuls and is well defined at size 1. The routing
input (channel means) is read off the DC bin of the transform instead of another pass over the map.

Inference (no autograd): the resized, re-laid-out bank is cached per grid, keyed on the parameter's
storage and ``_version``, so an optimizer step or ``load_state_dict`` can never leave a stale copy,
and the transforms reuse their buffers in place; with autograd on everything is recomputed
functionally so gradients reach the bank.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from timm.layers import register_notrace_module
from torch import nn

from freqkit.errors import FreqkitError
from freqkit.layers._autocast import no_autocast
from freqkit.layers._cache import DerivedCache
from freqkit.layers._tracing import fx_tracing, has_hooks, is_tracing
from freqkit.layers.starrelu import StarReLU

__all__ = ["FreqScale", "dft_matrices", "bicubic_matrix", "MODES", "TRANSFORMS"]

MODES = ("group", "static", "dynamic")
TRANSFORMS = ("auto", "fft", "matmul")
# the matmul DFT costs about 2W + 4H multiply-adds per element and channel; measured on CPU with
# 384 channels (eval, one thread) it beats pocketfft up to about 2W + 4H = 300 (2.6x faster at 14 x 14,
# even at 48 x 48, 1.2x slower at 32 x 128)
_MATMUL_MAX_COST = 300


def _cubic(t: float, a: float = -0.75) -> float:
    """Keys' cubic convolution kernel (a = -0.75, PyTorch's bicubic) at distance |t| <= 2."""
    t = abs(t)
    if t <= 1:
        return ((a + 2) * t - (a + 3)) * t * t + 1
    if t < 2:
        return ((a * t - 5 * a) * t + 8 * a) * t - 4 * a
    return 0.0


def bicubic_matrix(n_in: int, n_out: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """(n_out, n_in) matrix R with R @ v = 1D bicubic resize of v with align_corners=True, as F.interpolate.

    Built in numpy (source position i (n_in - 1) / (n_out - 1), taps floor - 1 .. floor + 2 clamped to
    the border) so that it is a constant under tracing and ONNX export.
    """
    r = np.zeros((n_out, n_in))
    scale = (n_in - 1) / (n_out - 1) if n_out > 1 else 0.0
    for i in range(n_out):
        src = i * scale
        base = math.floor(src)
        frac = src - base
        for tap in range(-1, 3):
            r[i, min(max(base + tap, 0), n_in - 1)] += _cubic(tap - frac)
    return torch.from_numpy(r).to(dtype)


def dft_matrices(
    h: int, w: int, dtype: torch.dtype = torch.float32
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Real matrices (MW1, MH1, MH2, MW2) such that, for x (B, H, W, C) and a real filter f (B, H, W//2+1, C),
    ``MW2 @ (MH2 @ (f * (MH1 @ (MW1 @ x))))`` (with the reshapes of ``_filter_matmul``) equals
    ``irfft2(rfft2(x, dim=(1, 2), norm="ortho") * f, s=(H, W), dim=(1, 2), norm="ortho")``.

    MW1 (2R, W): forward real DFT along W (rows: real parts, then imaginary parts), R = W//2+1.
    MH1 (2H, 2H): forward complex DFT along H on (h, re/im) pairs, rows (k, re/im).
    MH2 (2H, 2H): inverse complex DFT along H, rows (h, re/im), columns (k, re/im).
    MW2 (W, 2R): inverse real DFT along W (the C2R sum, weights 1 at DC and Nyquist, 2 elsewhere).
    Built in numpy (float64), so they are constants under tracing and export.
    """
    rw = w // 2 + 1
    kh = np.arange(h)
    ang_h = 2 * np.pi * np.outer(kh, kh) / h
    ch, sh = np.cos(ang_h) / np.sqrt(h), np.sin(ang_h) / np.sqrt(h)  # [k, h]
    ang_w = 2 * np.pi * np.outer(np.arange(rw), np.arange(w)) / w
    cw, sw = np.cos(ang_w) / np.sqrt(w), np.sin(ang_w) / np.sqrt(w)  # [l, w]
    # X = x F^T with F = cos - i sin: real part x cos^T, imaginary part -x sin^T
    mw1 = np.concatenate([cw, -sw], axis=0)
    mh1 = np.zeros((h, 2, h, 2))
    mh1[:, 0, :, 0], mh1[:, 0, :, 1] = ch, sh
    mh1[:, 1, :, 0], mh1[:, 1, :, 1] = -sh, ch
    mh2 = np.zeros((h, 2, h, 2))
    mh2[:, 0, :, 0], mh2[:, 0, :, 1] = ch.T, -sh.T
    mh2[:, 1, :, 0], mh2[:, 1, :, 1] = sh.T, ch.T
    # C2R: bins 1..ceil(W/2)-1 stand for themselves and their mirror (weight 2); the imaginary
    # parts of DC and Nyquist meet sin = 0, which drops them exactly as irfft does
    alpha = np.full((rw, 1), 2.0)
    alpha[0] = 1.0
    if w % 2 == 0:
        alpha[-1] = 1.0
    mw2 = np.concatenate([alpha * cw, -alpha * sw], axis=0).T
    mats = (mw1, mh1.reshape(2 * h, 2 * h), mh2.reshape(2 * h, 2 * h), mw2)
    return tuple(torch.from_numpy(np.ascontiguousarray(m)).to(dtype) for m in mats)


def _matmul_rfft2(xs: torch.Tensor, mats: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """rfft2(xs, dim=(1, 2), norm="ortho") of a float32 (B, H, W, C) map as real matrix products.

    Returns the spectrum as a real (B, H, 2, W//2+1, C) tensor (real parts, then imaginary parts,
    per frequency row k) and the (B, H, 2(W//2+1), C) buffer of the first product, free for reuse.
    """
    mw1, mh1 = mats[0], mats[1]
    b, h, w, c = xs.shape
    rw = w // 2 + 1
    # (B, H, 2R, C) = (B, H, re/im, R, C): rows (h, re/im) for the H transform
    p = torch.matmul(mw1, xs.contiguous())
    spec = torch.matmul(mh1, p.view(b, 2 * h, rw * c))
    return spec.view(b, h, 2, rw, c), p


def _matmul_irfft2(
    spec: torch.Tensor, w: int, mats: tuple[torch.Tensor, ...], scratch: Optional[torch.Tensor] = None
) -> torch.Tensor:
    """irfft2 of a (B, H, 2, W//2+1, C) real spectrum (see :func:`_matmul_rfft2`) -> (B, H, W, C).

    With ``scratch`` (a free tensor of the first product's size; no autograd), no new buffer is
    allocated: the inverse H product goes to ``scratch`` and the result into ``spec``'s storage,
    which matters on CPU, where every fresh large allocation pays page faults.
    """
    mh2, mw2 = mats[2], mats[3]
    b, h, _, rw, c = spec.shape
    flat = spec.reshape(b, 2 * h, rw * c)
    if scratch is None:
        return torch.matmul(mw2, torch.matmul(mh2, flat).view(b, h, 2 * rw, c))
    q = torch.matmul(mh2, flat, out=scratch.view(b, 2 * h, rw * c))
    # spec's storage (B * 2H * R * C >= B * H * W * C elements) is free again: the result goes there
    y = spec.view(-1)[: b * h * w * c].view(b, h, w, c)
    return torch.matmul(mw2, q.view(b, h, 2 * rw, c), out=y)


def _inference(*tensors: torch.Tensor) -> bool:
    """True when no autograd graph is needed (and not tracing or compiling), so buffers may be reused in place."""
    if is_tracing():
        return False
    return not (torch.is_grad_enabled() and any(t.requires_grad for t in tensors))


def _is_exporting() -> bool:
    if torch.onnx.is_in_onnx_export() or torch.jit.is_tracing():
        return True
    is_exporting = getattr(torch.compiler, "is_exporting", None)
    return bool(is_exporting()) if is_exporting is not None else False


class _Routing(nn.Module):
    """Routing MLP (B, C) -> (B, out): fc2(StarReLU(fc1(.))), no biases (released ``reweight``)."""

    def __init__(self, dim: int, hidden: int, out: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden, bias=False)
        self.act = StarReLU()
        self.fc2 = nn.Linear(hidden, out, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


# a leaf for torch.fx (timm's feature extraction and FX tests): the DFT and resize constants depend
# on the concrete grid, which symbolic tracing does not know
@register_notrace_module
class FreqScale(nn.Module):
    """Per-sample learned spectral filter of a map (B, C, H, W) -> filtered part (B, C, H, W); see the module docstring.

    ``fused`` (default True) runs the fast path (cached constants, matmul or FFT transform, buffers
    reused in inference); ``fused=False`` runs the reference path, the released algorithm written
    plainly (torch.fft, ``F.interpolate`` of the bank, nothing cached).

    Tap: while the module has forward hooks, every application (``forward`` on a map, ``apply_tokens`` on
    tokens) calls the module on the (B, C, H, W) map, so a forward pre-hook sees each input, and
    :meth:`spectral_weight` of it is the filter W applied (``freqkit.analysis.methods.freqscale`` reads it so).
    """

    def __init__(
        self,
        dim: int,
        mode: str = "group",
        num_filters: int = 4,
        groups: int = 16,
        size: int = 14,
        reduction: int = 16,
        init_std: float = 1e-5,
        transform: str = "auto",
        fused: bool = True,
    ) -> None:
        super().__init__()
        if mode not in MODES:
            raise FreqkitError(f"FreqScale: unknown mode {mode!r}; choose one of {list(MODES)}")
        if transform not in TRANSFORMS:
            raise FreqkitError(f"FreqScale: unknown transform {transform!r}; choose one of {list(TRANSFORMS)}")
        if dim < 1 or size < 1 or num_filters < 1 or reduction < 1 or groups < 1:
            raise FreqkitError(
                f"FreqScale: dim, size, num_filters, groups and reduction must be >= 1 (got {dim}, {size}, {num_filters}, {groups}, {reduction})"
            )
        if mode == "group" and dim % groups != 0:
            raise FreqkitError(
                f"FreqScale: {dim} channels are not divisible by groups={groups}; pick groups that divide the channels"
            )
        self.dim = dim
        self.mode = mode
        self.size = size
        self.num_filters = num_filters if mode != "static" else 1
        self.groups = groups if mode == "group" else 1
        self.transform = transform
        self.fused = bool(fused)
        half = size // 2 + 1
        if mode == "static":
            self.complex_weights = nn.Parameter(torch.empty(dim, size, half))
            self.reweight: Optional[_Routing] = None
        else:
            self.complex_weights = nn.Parameter(torch.empty(num_filters, dim // self.groups, size, half))
            self.reweight = _Routing(dim, max(1, dim // reduction), self.groups * num_filters)
        if init_std > 0:
            # the released bank is trunc_normal_(std) with timm's absolute bounds +-2: a plain normal at std 1e-5
            # (drawn directly: the truncated sampler can return the bound -2 itself when its uniform draw hits -1)
            nn.init.normal_(self.complex_weights, std=init_std)
        else:
            nn.init.zeros_(self.complex_weights)
        # per-grid constants and (eval, no-grad) resized banks; not state, rebuilt on demand
        self._cache = DerivedCache()

    def extra_repr(self) -> str:
        return f"dim={self.dim}, mode={self.mode!r}, num_filters={self.num_filters}, groups={self.groups}, size={self.size}, transform={self.transform!r}, fused={self.fused}"

    # ----------------------------------------------------------------------------------------- caching
    def _constants(self, kind: str, h: int, w: int, device: torch.device) -> tuple[torch.Tensor, ...]:
        if kind == "dft":
            return self._cache.constant(("dft", h, w, device), lambda: tuple(m.to(device) for m in dft_matrices(h, w)))
        rh, rw = h, w // 2 + 1
        s, half = self.complex_weights.shape[-2:]
        return self._cache.constant(
            ("resize", rh, rw, device),
            lambda: (bicubic_matrix(s, rh, torch.float32).to(device), bicubic_matrix(half, rw, torch.float32).to(device)),
        )

    def resized_bank(self, h: int, w: int) -> torch.Tensor:
        """The bank at grid (H, W), float32, channels last: (n, H*(W//2+1), C/g), or (H*(W//2+1), C) for static."""
        param = self.complex_weights
        rh, rw = h, w // 2 + 1

        def build() -> torch.Tensor:
            k = param.float()
            if k.ndim == 3:
                k = k.unsqueeze(0)
            if tuple(k.shape[-2:]) == (rh, rw):
                out = k.permute(0, 2, 3, 1)
            else:
                mh, mw = self._constants("resize", h, w, param.device)
                out = torch.einsum("is,ncst,jt->nijc", mh, k, mw)
            out = out.reshape(out.shape[0], rh * rw, out.shape[-1])
            return out[0].contiguous() if self.mode == "static" else out.contiguous()

        if _is_exporting():
            return build()
        return self._cache.derived(self, ("bank", rh, rw), [param], build)

    # ----------------------------------------------------------------------------------------- math
    def routing(self, gap: torch.Tensor) -> torch.Tensor:
        """Routing weights (B, g, n) in float32 from the channel means gap (B, C)."""
        if self.reweight is None:
            raise FreqkitError("FreqScale: static mode has no routing")
        r = self.reweight(gap.to(self.reweight.fc1.weight.dtype))
        return torch.tanh(r.float()).view(gap.shape[0], self.groups, self.num_filters)

    def spectral_weight(self, xs: torch.Tensor) -> torch.Tensor:
        """The real filter W (B or 1, H, W//2+1, C) in float32 that this module applies to a channels-last map xs (B, H, W, C).

        The module's output is irfft2(rfft2(x) * W): the response of the block's ``x + FreqScale(x)`` is 1 + W
        (the FDAM supplementary's Fig. 8 shows it; :mod:`freqkit.analysis.methods` reads it here).
        """
        b, h, w, c = (int(v) for v in xs.shape)
        return self._weight(xs.mean(dim=(1, 2), dtype=torch.float32), h, w)

    def _weight(self, gap: torch.Tensor, h: int, w: int) -> torch.Tensor:
        bank = self.resized_bank(h, w)
        rw = w // 2 + 1
        if self.mode == "static":
            return bank.view(1, h, rw, self.dim)
        r = self.routing(gap)
        with no_autocast(gap.device):  # the filter stays float32 under autocast
            return torch.einsum("bgn,npc->bpgc", r, bank).reshape(gap.shape[0], h, rw, self.dim)

    def _mul_routed_(self, spec: torch.Tensor, gap: torch.Tensor, w: int) -> torch.Tensor:
        """spec (B, H, 2, W//2+1, C) float32 times the routed filter, in place; gap (B, C) are the channel means.

        The filter W[b, p, g, c'] = sum_n r[b, g, n] K[n, p, c'] comes out of one product in (b, g, p, c') order
        and is applied through a permuted view: the (b, p, g, c') layout that ``_weight`` returns costs a copy.
        """
        b, h, _, rw, c = spec.shape
        bank = self.resized_bank(h, w)
        r = self.routing(gap)
        n, cg = self.num_filters, c // self.groups
        weight = torch.mm(r.view(b * self.groups, n), bank.view(n, h * rw * cg)).view(b, self.groups, h, rw, cg)
        spec.view(b, h, 2, rw, self.groups, cg).mul_(weight.permute(0, 2, 3, 1, 4).unsqueeze(2))
        return spec

    def _use_matmul(self, h: int, w: int, device: torch.device) -> bool:
        if self.transform != "auto":
            return self.transform == "matmul"
        if _is_exporting():
            return True
        return device.type == "cpu" and 2 * w + 4 * h <= _MATMUL_MAX_COST

    def filter_channels_last(self, xs: torch.Tensor) -> torch.Tensor:
        """Filtered part (B, H, W, C) of a channels-last map xs (B, H, W, C), in xs's dtype."""
        return self._filtered32(xs).to(xs.dtype)

    def _filtered32(self, xs: torch.Tensor) -> torch.Tensor:
        """Filtered part (B, H, W, C) of xs (B, H, W, C) in float32."""
        if xs.ndim != 4 or xs.shape[-1] != self.dim:
            raise FreqkitError(f"FreqScale: expected a channels-last map (B, H, W, {self.dim}), got {tuple(xs.shape)}")
        # plain ints: the legacy ONNX exporter traces sizes as tensors; the grid is fixed per export
        b, h, w, c = (int(v) for v in xs.shape)
        x32 = xs.float()
        inplace = _inference(xs, self.complex_weights) and not _is_exporting()
        # autocast would run the DFT products in half precision: the transform is float32 throughout
        with no_autocast(xs.device):
            # the routing input, the channel means, is the DC bin of the orthonormal transform / sqrt(HW):
            # reading it there saves a pass over the map
            if self._use_matmul(h, w, xs.device):
                mats = self._constants("dft", h, w, xs.device)
                spec, scratch = _matmul_rfft2(x32, mats)
                del x32  # a float32 copy for half-precision input: free it before the inverse (peak memory)
                gap = spec[:, 0, 0, 0] / math.sqrt(h * w)
                if inplace and self.mode != "static":
                    spec = self._mul_routed_(spec, gap, w)
                else:
                    weight = self._weight(gap, h, w).unsqueeze(2)
                    spec = spec.mul_(weight) if inplace else spec * weight
                y = _matmul_irfft2(spec, w, mats, scratch if inplace else None)
            else:
                spec = torch.fft.rfft2(x32, dim=(1, 2), norm="ortho")
                del x32
                real = torch.view_as_real(spec)
                weight = self._weight(real[:, 0, 0, :, 0] / math.sqrt(h * w), h, w).unsqueeze(-1)
                spec = torch.view_as_complex(real.mul_(weight) if inplace else real * weight)
                y = torch.fft.irfft2(spec, s=(h, w), dim=(1, 2), norm="ortho")
        return y

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Filtered part (B, C, H, W) of a map x (B, C, H, W), in x's dtype (the released module's output).

        The result is a channels-last view (no copy back to NCHW): token callers permute it back for free.
        """
        if x.ndim != 4 or x.shape[1] != self.dim:
            raise FreqkitError(f"FreqScale: expected a map (B, {self.dim}, H, W), got {tuple(x.shape)}")
        if not self.fused:
            return self._reference(x)
        return self.filter_channels_last(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)

    def _reference(self, x: torch.Tensor) -> torch.Tensor:
        """The released algorithm on a map (B, C, H, W): rfft2, bicubic-resized bank, routing on the channel means."""
        b, c, h, w = x.shape
        with no_autocast(x.device):
            x32 = x.float()
            bank = self.complex_weights.float()
            bank = bank[None] if self.mode == "static" else bank  # (n, C/g, S, S//2+1)
            if tuple(bank.shape[-2:]) != (h, w // 2 + 1):
                bank = F.interpolate(bank, size=(h, w // 2 + 1), mode="bicubic", align_corners=True)
            if self.mode == "static":
                weight = bank[0][None]  # (1, C, H, W//2+1)
            else:
                r = self.routing(x32.mean(dim=(-2, -1)))  # (B, g, n)
                weight = torch.einsum("bgn,njhw->bgjhw", r, bank).reshape(b, c, h, w // 2 + 1)
            spec = torch.fft.rfft2(x32, norm="ortho") * weight
            y = torch.fft.irfft2(spec, s=(h, w), norm="ortho")
        return y.to(x.dtype)

    def apply_tokens(self, t: torch.Tensor, grid_size: Optional[Sequence[int]], num_prefix_tokens: int = 0) -> torch.Tensor:
        """t + filtered(t) for tokens t (B, N, C) on an (H, W) grid; the first ``num_prefix_tokens`` pass unchanged."""
        if grid_size is None:
            raise FreqkitError(
                "FreqScale: the token grid was never set; pass grid_size=(H, W) or call freqkit.layers.set_grid(model, (H, W), num_prefix_tokens)"
            )
        h, w = grid_size[0], grid_size[1]
        p = int(num_prefix_tokens)
        if not fx_tracing():  # under torch.fx the sizes are proxies; the check runs when the traced graph does
            if t.ndim != 3 or t.shape[-1] != self.dim:
                raise FreqkitError(f"FreqScale: expected tokens (B, N, {self.dim}), got {tuple(t.shape)}")
            if t.shape[1] != int(h) * int(w) + p:
                raise FreqkitError(
                    f"FreqScale: {t.shape[1]} tokens do not fill the {int(h)}x{int(w)} grid plus {p} prefix tokens ({int(h) * int(w) + p}); "
                    "check the grid size (image size / patch size) and the number of CLS / register tokens"
                )
        b, n, c = t.shape
        xs = (t[:, p:] if p else t).reshape(b, h, w, c)
        if p and self.fused and _inference(t, self.complex_weights) and not _is_exporting() and not has_hooks(self):
            # inference: the sum goes straight into the output tokens, instead of a new map and a torch.cat copy
            filtered = self.filter_channels_last(xs)
            out = torch.empty_like(t)
            out[:, :p] = t[:, :p]
            torch.add(xs, filtered, out=out[:, p:].view(b, int(h), int(w), c))
            return out
        # through __call__, so that torch.fx keeps this module a leaf; both permutes are free views
        y = xs + self(xs.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        y = y.reshape(b, -1, c)
        return torch.cat([t[:, :p], y], dim=1) if p else y
