"""Attention Inversion (AttInv, FDAM, FDAM supplementary, Sec. C) in the released parameterization.

With O = A V (heads merged head-major) and the block's normalized input x:

    u  = StarReLU(x)                       (learnable scalars, released ``dy_freq_starrelu``)
    Sl = tanh(dy_freq_2(u))                 per token and head, in (-1, 1)
    t  = softplus(dy_freq(u)); Sh = 2 t^2 / (t^2 + 0.3678)   per token and head, in [0, 2)
    Y  = O + g_lf * Sl * O + g_hf * Sh * (V - O)

g_lf, g_hf are per channel (released ``lf_gamma``, ``hf_gamma``, init 1e-5), each head's gate is
shared by that head's channels. Since V - A V = (I - A) V, this is the seed's eq. 32,
X' = S_bar A X + S_hat (I - A) X with S_bar = 1 + g_lf Sl and S_hat = g_hf Sh, without ever
building A: the filter needs only A V, which the fused attention already computed. The constant is the
released 0.3678, not exp(-1) (the difference shows at the 1e-4 level).

Checkpoint keys: inside :class:`freqkit.layers.Attention` the parameters live under
``attn.filter.*``; released checkpoints store them under ``attn.*``.
``freqkit.models.fdam_vit.remap_released_keys`` maps one to the other.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from freqkit.errors import FreqkitError
from freqkit.layers._tracing import fx_tracing, has_hooks, is_tracing
from freqkit.layers.attention import AttentionContext, AttentionFilter
from freqkit.layers.starrelu import StarReLU

__all__ = ["AttInv", "HF_CONSTANT"]

# released constant in Sh = 2 t^2 / (t^2 + c); close to, but not, exp(-1)
HF_CONSTANT = 0.3678


def _inference(*tensors: torch.Tensor) -> bool:
    """True when no autograd graph is needed (and not tracing or compiling), so buffers may be reused in place."""
    if is_tracing():
        return False
    return not (torch.is_grad_enabled() and any(t.requires_grad for t in tensors))


class AttInv(AttentionFilter):
    """AttInv filter: A V (B, heads, N, d) -> O + g_lf Sl O + g_hf Sh (V - O), gates from ctx.x (B, N, C)."""

    def __init__(self, dim: int, num_heads: int, init_value: float = 1e-5) -> None:
        super().__init__()
        if num_heads < 1 or dim % num_heads != 0:
            raise FreqkitError(
                f"AttInv: dim {dim} is not divisible by num_heads {num_heads}; pass the attention's channels and head count"
            )
        self.dim = dim
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        # released names: dy_freq -> high-pass gate Sh, dy_freq_2 -> low-pass gate Sl
        self.dy_freq = nn.Linear(dim, num_heads)
        self.dy_freq_2 = nn.Linear(dim, num_heads)
        self.lf_gamma = nn.Parameter(torch.full((dim,), float(init_value)))
        self.hf_gamma = nn.Parameter(torch.full((dim,), float(init_value)))
        self.dy_freq_starrelu = StarReLU()

    def gates(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(Sl, Sh), each (B, N, heads), from the block's normalized input x (B, N, C)."""
        if not fx_tracing() and (x.ndim != 3 or x.shape[-1] != self.dim):
            raise FreqkitError(f"AttInv: expected the attention input of shape (B, N, {self.dim}), got {tuple(x.shape)}")
        # Linear(s relu(x)^2 + b) = s (relu(x)^2 W^T) + (b W 1 + bias): the StarReLU scalars fold into the
        # (2 heads, C) gate weights, so the (B, N, C) tensor is touched by relu and square only
        act = self.dy_freq_starrelu
        w = torch.cat([self.dy_freq_2.weight, self.dy_freq.weight], dim=0)
        b = torch.cat([self.dy_freq_2.bias, self.dy_freq.bias], dim=0)
        r = torch.relu(x)
        r2 = r.square_() if _inference(x) else r.square()
        z = F.linear(r2, (w * act.scale).to(r2.dtype), (b + act.bias * w.sum(dim=1)).to(r2.dtype))
        sl = torch.tanh(z[..., : self.num_heads])
        t2 = F.softplus(z[..., self.num_heads :]).square()
        sh = 2.0 * t2 / (t2 + HF_CONSTANT)
        return sl, sh

    def forward(self, out: torch.Tensor, ctx: AttentionContext) -> torch.Tensor:
        B, h, N, d = out.shape
        if not fx_tracing() and (h != self.num_heads or d != self.head_dim):
            raise FreqkitError(
                f"AttInv: built for {self.num_heads} heads of {self.head_dim} channels, got attention output {tuple(out.shape)}"
            )
        sl, sh = self.gates(ctx.x)
        # per-token, per-head gates (B, h, N, 1) and per-channel gammas (h, 1, d)
        sl = sl.to(out.dtype).transpose(1, 2).unsqueeze(-1)
        sh = sh.to(out.dtype).transpose(1, 2).unsqueeze(-1)
        g_lf = self.lf_gamma.to(out.dtype).view(self.num_heads, 1, self.head_dim)
        g_hf = self.hf_gamma.to(out.dtype).view(self.num_heads, 1, self.head_dim)
        # both paths run the same operations in the same order, so they agree bit for bit
        # (a traced or exported graph reproduces the eager output exactly)
        if not _inference(out, ctx.v, self.lf_gamma):
            y = torch.addcmul(out, out * sl, g_lf)
            return torch.addcmul(y, (ctx.v - out) * sh, g_hf)
        # inference: in place, written into (B, N, heads, d) memory so that merging the heads
        # afterwards (transpose + reshape in Attention) is a free view instead of a copy
        y = torch.empty(B, N, h, d, dtype=out.dtype, device=out.device).transpose(1, 2)
        torch.mul(out, sl, out=y)
        torch.addcmul(out, y, g_lf, out=y)
        if not getattr(ctx, "out_is_scratch", False) or has_hooks(self):
            hp = torch.sub(ctx.v, out).mul_(sh)
            return y.addcmul_(hp, g_hf)
        # A V is the attention's temporary (ctx says so) and is read no more: (O - V) Sh goes into it instead of a new
        # buffer (on CPU a fresh one pays page faults). Negated exactly, so the sum is the same bit for bit
        neg_hp = out.sub_(ctx.v).mul_(sh)
        return y.addcmul_(neg_hp, g_hf, value=-1)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, num_heads={self.num_heads}"
