"""SPAM (SPANet, ICCV 2023): spectral pooling aggregation modulation, the SPANet token mixer.

    v = dwconv_7x1(dwconv_1x7(proj_in(x)));  (v_0, v_1, v_2) = torch.chunk(v, 3, dim=1)
    ctx = sum_i pws_i(SPF(lambda_i, r)(v_i));  y = proj_out(v * ctx)

SPF is a fixed real mask on the orthonormal 2-D spectrum with signed integer frequencies
k = (ky, kx) (``fftfreq(n) * n``): M(k) = lambda if |k| < r, exactly 1/3 if |k| = r, 1 - lambda if
|k| > r (|k| Euclidean). The released code stores the mask fftshift-ed with DC at (H // 2, W // 2);
that is the same function of the signed frequencies (checked against the released tensors).

Because M is (1 - lambda) everywhere except on the few bins with |k| <= r, SPF(x) = (1 - lambda) x +
P(x), where P keeps only those bins, weighted by M(k) - (1 - lambda). P is a sum of separable
cosine / sine products (M depends on |ky| and |kx| only), so with real bases Phi_y (H, m_y),
Phi_x (W, m_x) of the frequencies 0..r, P(x) = Phi_y (G * (Phi_y^T x Phi_x)) Phi_x^T: about
2 (2r + 1) multiply-adds per pixel, no FFT. The three 1x1 convolutions pws_i then merge into one
C -> C convolution, and the channel mixing of the low-frequency part happens on the (m_y, m_x)
coefficients. The fast path (``fused=True``, default) does that with ``transform="bins"``; with
``transform="rfft"`` it multiplies the half spectrum of all channels by their masks
(irfft2(rfft2(v) * M)). ``fused=False`` is the reference path, the released algorithm (full complex
FFT, fftshift, three separate branches) for tests and benchmarks. All three agree to float32
round-off; spectral parts run in float32 and the result comes back in the input dtype.

Masks are built for the actual input size and never stored. Released checkpoints carry them as
``sps.{0,1,2}.filter`` (1, H0, W0): loading accepts those keys, checks them against the mask this
module would build for (H0, W0) (a mismatch means a wrong radius) and drops them.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from timm.layers import register_notrace_module
from torch import nn

from freqkit.errors import FreqkitError
from freqkit.layers._autocast import no_autocast
from freqkit.layers._cache import DerivedCache

__all__ = ["SPAM", "SPAM_LAMBDAS", "spf_mask", "signed_frequencies"]

SPAM_LAMBDAS: tuple[float, ...] = (0.7, 0.8, 0.9)
_TRANSFORMS = ("bins", "rfft")
_RING = 1.0 / 3.0


def signed_frequencies(n: int, device: Optional[torch.device] = None) -> torch.Tensor:
    """Signed integer DFT frequencies of a length-n axis, ``fftfreq(n) * n`` as int64 (n,)."""
    k = torch.arange(n, device=device)
    return torch.where(k < (n + 1) // 2, k, k - n)


def _radius_class(ky: torch.Tensor, kx: torch.Tensor, radius: float) -> torch.Tensor:
    """-1 inside the disc |k| < r, 0 on the ring |k| = r, +1 outside (sqrt as the released code)."""
    dist = torch.sqrt((ky.double() ** 2)[:, None] + (kx.double() ** 2)[None, :])
    return torch.sign(dist - float(radius))


def spf_mask(
    size: tuple[int, int],
    radius: float,
    lam: float,
    *,
    shifted: bool = False,
    device: Optional[torch.device] = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """The SPF mask (H, W) on the unshifted FFT grid (``shifted=True``: DC at (H // 2, W // 2))."""
    h, w = int(size[0]), int(size[1])
    cls = _radius_class(signed_frequencies(h, device), signed_frequencies(w, device), radius)
    mask = torch.where(cls < 0, lam, torch.where(cls > 0, 1.0 - lam, _RING)).to(dtype)
    return torch.fft.fftshift(mask) if shifted else mask


def _real_basis(n: int, radius: float, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Columns cos / sin of the distinct frequencies 0..min(r, n // 2) of a length-n axis.

    Returns the basis (n, m) float32, the frequency of each column (m,) and its multiplicity
    (1 for DC and the Nyquist bin, 2 for a +-f pair), so that the projection onto frequency f is
    mult / n * sum of basis_j basis_j^T over the columns j of f.
    """
    fmax = min(int(math.floor(radius)), n // 2)
    t = torch.arange(n, device=device, dtype=torch.float64)
    cols, freqs, mults = [], [], []
    for f in range(fmax + 1):
        ang = 2.0 * math.pi * f * t / n
        pair = 0 < f and 2 * f != n
        cols.append(torch.cos(ang))
        freqs.append(f)
        mults.append(2.0 if pair else 1.0)
        if pair:
            cols.append(torch.sin(ang))
            freqs.append(f)
            mults.append(2.0)
    basis = torch.stack(cols, dim=1).float()
    return basis, torch.tensor(freqs, device=device), torch.tensor(mults, device=device, dtype=torch.float64)


# a leaf for torch.fx (timm's feature extraction and FX tests): the spectral constants are built
# for the concrete (H, W), which symbolic tracing does not know
@register_notrace_module
class SPAM(nn.Module):
    """SPAM token mixer on maps: (B, C, H, W) -> (B, C, H, W), any H and W.

    Released key names: ``proj_in``, ``conv.0`` (1 x k), ``conv.1`` (k x 1), ``pws.{0,1,2}``,
    ``proj_out``. ``fused=False`` runs the released algorithm; the fast path's ``transform`` is
    "bins" (exact low-bin projection, default) or "rfft".
    """

    def __init__(
        self,
        dim: int,
        kernel_size: int = 7,
        radius: float = 2.0,
        lambdas: Sequence[float] = SPAM_LAMBDAS,
        fused: bool = True,
        transform: str = "bins",
        proj_drop: float = 0.0,
        device: Optional[torch.device] = None,
        dtype: Optional[torch.dtype] = None,
    ) -> None:
        super().__init__()
        if transform not in _TRANSFORMS:
            raise FreqkitError(
                f"SPAM: unknown transform {transform!r}; use one of {', '.join(_TRANSFORMS)} (fused=False for the reference path)"
            )
        if radius < 0:
            raise FreqkitError(f"SPAM: radius must be >= 0, got {radius}; the released stages use 2, 2, 1, 1")
        chunks = [int(c.numel()) for c in torch.arange(dim).chunk(len(lambdas))]
        if len(chunks) != len(lambdas):
            raise FreqkitError(
                f"SPAM: dim {dim} cannot be split into {len(lambdas)} chunks by torch.chunk; use dim >= {2 * len(lambdas)}"
            )
        dd = {"device": device, "dtype": dtype}
        self.dim = dim
        self.radius = float(radius)
        self.lambdas = tuple(float(lam) for lam in lambdas)
        self.chunks = tuple(chunks)
        self.fused = bool(fused)
        self.transform = transform
        self.proj_in = nn.Conv2d(dim, dim, 1, **dd)
        self.conv = nn.Sequential(
            nn.Conv2d(dim, dim, (1, kernel_size), padding=(0, kernel_size // 2), groups=dim, **dd),
            nn.Conv2d(dim, dim, (kernel_size, 1), padding=(kernel_size // 2, 0), groups=dim, **dd),
        )
        self.pws = nn.ModuleList(nn.Conv2d(c, dim, 1, **dd) for c in chunks)
        self.proj_out = nn.Conv2d(dim, dim, 1, **dd)
        self.proj_drop = nn.Dropout(proj_drop)
        # spectral constants per (H, W, device) and the merged pws weights (eval mode only)
        self._cache = DerivedCache()
        self.register_load_state_dict_pre_hook(_drop_released_masks)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, radius={self.radius:g}, lambdas={self.lambdas}, fused={self.fused}, transform={self.transform!r}"

    def channel_lambdas(self, device: Optional[torch.device] = None) -> torch.Tensor:
        """lambda of each channel of v (C,), float32: chunk i's channels get lambdas[i]."""
        return torch.tensor([lam for lam, c in zip(self.lambdas, self.chunks) for _ in range(c)], device=device)

    def mask(
        self, size: tuple[int, int], branch: int, shifted: bool = False, device: Optional[torch.device] = None
    ) -> torch.Tensor:
        """The SPF mask (H, W) of branch ``branch`` at this size (what the released code stores, with ``shifted``)."""
        return spf_mask(size, self.radius, self.lambdas[branch], shifted=shifted, device=device)

    def check_released_mask(self, branch: int, stored: torch.Tensor) -> None:
        """Raise a FreqkitError when a released ``sps.<branch>.filter`` is not this module's mask."""
        if stored.ndim != 3 or stored.shape[0] != 1:
            raise FreqkitError(f"SPAM: released mask sps.{branch}.filter has shape {tuple(stored.shape)}, expected (1, H, W)")
        h, w = stored.shape[-2:]
        want = self.mask((h, w), branch, shifted=True)
        if not torch.allclose(stored[0].float().cpu(), want, atol=1e-5):
            raise FreqkitError(
                f"SPAM: checkpoint mask sps.{branch}.filter ({h}x{w}) is not the mask of radius {self.radius:g}, "
                f"lambda {self.lambdas[branch]:g}; build the model with the checkpoint's radius"
            )

    # ---- forward ------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.dim:
            raise FreqkitError(f"SPAM expects maps of shape (B, {self.dim}, H, W), got {tuple(x.shape)}")
        v = self.conv(self.proj_in(x))
        ctx = self._context_fused(v) if self.fused else self._context_reference(v)
        return self.proj_drop(self.proj_out(v * ctx))

    def _merged_pws(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The three pws convolutions as one C -> C weight (C, C), that weight times (1 - lambda) per
        input channel as a 1x1 kernel (C, C, 1, 1), and the summed bias (C,)."""

        def build() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            weight = torch.cat([p.weight.flatten(1) for p in self.pws], dim=1)
            keep = 1.0 - self.channel_lambdas(weight.device)
            # the all-pass part of every mask commutes with the 1x1 conv: fold it into the weight
            return weight, (weight * keep.to(weight.dtype))[:, :, None, None], sum(p.bias for p in self.pws)

        params = [t for p in self.pws for t in (p.weight, p.bias)]
        return self._cache.derived(self, ("pws",), params, build)

    def _context_fused(self, v: torch.Tensor) -> torch.Tensor:
        h, w = v.shape[-2:]
        weight, allpass, bias = self._merged_pws()
        consts = self._spectral_constants(h, w, v.device)
        ctx = F.conv2d(v, allpass, bias)
        with no_autocast(v.device):
            v32, w32 = v.float(), weight.float()
            if self.transform == "rfft":
                half = consts[0]  # (C, H, W // 2 + 1): M - (1 - lambda) on the half spectrum
                low = torch.fft.irfft2(torch.fft.rfft2(v32, norm="ortho") * half, s=(h, w), norm="ortho")
                low = F.conv2d(low, w32[:, :, None, None])
            else:
                phi_y, phi_x, gain = consts
                coef = phi_y.t() @ (v32 @ phi_x)  # (B, C, m_y, m_x)
                coef = torch.einsum("oc,bcij->boij", w32, coef * gain)
                low = (phi_y @ coef) @ phi_x.t()
        return ctx + low.to(ctx.dtype)

    def _spectral_constants(self, h: int, w: int, device: torch.device) -> tuple[torch.Tensor, ...]:
        return self._cache.constant((h, w, str(device), self.transform), lambda: self._build_constants(h, w, device))

    def _build_constants(self, h: int, w: int, device: torch.device) -> tuple[torch.Tensor, ...]:
        lam = self.channel_lambdas(device)
        keep = 1.0 - lam
        if self.transform == "rfft":
            masks = torch.stack([spf_mask((h, w), self.radius, l, device=device) for l in self.lambdas])
            per_channel = masks.repeat_interleave(torch.tensor(self.chunks, device=device), dim=0)
            consts = ((per_channel - keep[:, None, None])[:, :, : w // 2 + 1].contiguous(),)
        else:
            phi_y, fy, my = _real_basis(h, self.radius, device)
            phi_x, fx, mx = _real_basis(w, self.radius, device)
            cls = _radius_class(fy, fx, self.radius)  # (m_y, m_x)
            # M - (1 - lambda): 2 lambda - 1 inside, lambda - 2/3 on the ring, 0 outside
            inside = (cls < 0).double()[None] * (2.0 * lam.double() - 1.0)[:, None, None]
            ring = (cls == 0).double()[None] * (lam.double() - 2.0 / 3.0)[:, None, None]
            norm = (my[:, None] * mx[None, :]) / float(h * w)
            consts = (phi_y, phi_x, ((inside + ring) * norm).float())
        return consts

    def _context_reference(self, v: torch.Tensor) -> torch.Tensor:
        """The released algorithm: per chunk fft2 (ortho), fftshift, shifted mask, inverse, real part, pws_i."""
        h, w = v.shape[-2:]
        # the released code stores its masks: precomputed, as here
        masks = self._cache.constant(
            (h, w, str(v.device), "reference"),
            lambda: tuple(self.mask((h, w), i, shifted=True, device=v.device) for i in range(len(self.lambdas))),
        )
        ctx = 0
        for chunk, pw, mask in zip(torch.chunk(v, len(self.lambdas), dim=1), self.pws, masks):
            with no_autocast(v.device):
                spec = torch.fft.fftshift(torch.fft.fft2(chunk.float(), norm="ortho"), dim=(-2, -1)) * mask
                filtered = torch.fft.ifft2(torch.fft.ifftshift(spec, dim=(-2, -1)), norm="ortho").real
            ctx = ctx + pw(filtered.to(v.dtype))
        return ctx


def _drop_released_masks(module: SPAM, state_dict: dict, prefix: str, *args) -> None:
    """Load pre-hook: check and remove the released fixed masks ``sps.<i>.filter``."""
    for i in range(len(module.lambdas)):
        key = f"{prefix}sps.{i}.filter"
        if key in state_dict:
            module.check_released_mask(i, state_dict.pop(key))
