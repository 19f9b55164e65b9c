"""Token similarity diagnostics (FDAM supplementary, Sec. G): within-layer pairwise cosine similarity and
the cross-layer similarity matrix. The cosine of a zero token with anything counts as 0."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from freqkit.errors import FreqkitError
from freqkit.spectral._common import check_ndim, compute_dtype, to_compute, to_output

# Gram rows per block: keeps one block of (B, rows, N) under ~16M elements
_GRAM_BLOCK_ELEMS = 1 << 24


def token_cosine_similarity(x: torch.Tensor, absolute: bool = True) -> torch.Tensor:
    """Mean over token pairs i < j of |x_i . x_j| / (|x_i| |x_j|) (FDAM supplementary, eq. 36) for tokens (B, N, C) -> (B,).

    absolute=False averages the signed cosine. A zero token has cosine 0 with every token; a single
    token (no pairs) gives 0. (N, C) input gives a 0-d tensor. The Gram matrix is built a block of
    rows at a time, so memory stays about 16M elements plus the tokens.
    """
    check_ndim(x, (2, 3), "x", "(B, N, C) or (N, C)")
    u = _unit_rows(to_compute(x))
    single = u.ndim == 2
    if single:
        u = u[None]
    b, n, _ = u.shape
    total = u.new_zeros(b)
    block = max(1, _GRAM_BLOCK_ELEMS // max(1, b * n))
    for start in range(0, n, block):
        gram = u[:, start : start + block] @ u.transpose(1, 2)  # (B, rows, N)
        rows = torch.arange(gram.shape[1], device=u.device)
        gram[:, rows, rows + start] = 0  # drop i == j exactly
        total = total + (gram.abs() if absolute else gram).sum(dim=(1, 2))
    pairs = n * (n - 1)
    sim = total / pairs if pairs > 0 else torch.zeros_like(total)
    return to_output(sim[0] if single else sim, x)


def cross_layer_similarity(layers: Sequence[torch.Tensor] | torch.Tensor) -> torch.Tensor:
    """Cross-layer similarity of L layers' tokens (each (B, N, C), or stacked (L, B, N, C)) -> (L, L).

    Entry (l, m) is the mean over batch and tokens of cos(x_i at layer l, x_i at layer m) (FDAM supplementary
    Fig. 5). The matrix is exactly symmetric and its diagonal is exactly the fraction of non-zero
    tokens (1 when no token is zero).
    """
    if isinstance(layers, torch.Tensor):
        check_ndim(layers, (4,), "layers", "(L, B, N, C)")
        layers = list(layers.unbind())
    else:
        layers = list(layers)
        if not layers:
            raise FreqkitError("cross_layer_similarity got no layers; pass a list of (B, N, C) tensors")
        for i, t in enumerate(layers):
            check_ndim(t, (3,), f"layers[{i}]", "(B, N, C)")
            if t.shape != layers[0].shape:
                raise FreqkitError(
                    f"layers[{i}] has shape {tuple(t.shape)} but layers[0] has {tuple(layers[0].shape)}; "
                    "pass token maps of one input with the same token count and width"
                )
    like = layers[0]
    b, n, c = like.shape
    tokens = b * n
    if tokens == 0:
        raise FreqkitError("cross_layer_similarity got layers with no tokens; pass non-empty (B, N, C) tensors")
    # unit rows written layer by layer into one buffer: no stacked copy of the inputs, and no stacked temporaries
    z = torch.empty((len(layers), tokens, c), dtype=compute_dtype(like), device=like.device)
    nonzero = torch.empty(len(layers), dtype=z.dtype, device=z.device)
    for i, t in enumerate(layers):
        u = _unit_rows(to_compute(t)).reshape(tokens, c)
        z[i] = u
        nonzero[i] = (u.abs().amax(dim=-1) > 0).to(z.dtype).mean()
    sim = torch.einsum("lnc,mnc->lm", z, z) / tokens
    sim = 0.5 * (sim + sim.T)
    sim.diagonal().copy_(nonzero)
    return to_output(sim, like)


def _unit_rows(x: torch.Tensor) -> torch.Tensor:
    """Rows of x (..., C) scaled to unit L2 norm; zero rows stay zero."""
    norm = torch.linalg.vector_norm(x, dim=-1, keepdim=True)
    return x / torch.where(norm > 0, norm, torch.ones_like(norm))
