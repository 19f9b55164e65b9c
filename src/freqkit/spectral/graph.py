"""Graph-spectral simulation of token mixers (SPANetV2's analysis, in our own formulation).

The H x W tokens are the nodes of a graph. Graph frequencies and the graph Fourier basis are the
eigenvalues lambda_j (in [0, 2], ascending) and orthonormal eigenvectors U of the symmetric
normalized Laplacian L = I - D^{-1/2} A D^{-1/2} of the 4-neighbour grid (``periodic=True``: the
torus). A token mixer is an N x N filter matrix T acting on a signal x (N,) as T x:

- a k x k window mixer links each node to the nodes within k // 2 rows and columns (itself
  included); row-normalized, it is the uniform window average, and ``k=None`` (or k covering the
  grid) is the complete graph: global averaging, which is what softmax attention with equal
  scores does; :func:`window_attention` is softmax attention restricted to the window;
- a convolution is a fixed stencil s: (T x)[p] = sum_d s[d] x[p + d] (cross-correlation, zero
  padding; wrapped on the torus).

The response at graph frequency lambda_j is r_j = (U^T T U)_jj = u_j^T T u_j. Eigenvalues of the
grid repeat, and r_j then depends on the basis chosen inside an eigenspace; the mean of r_j over an
eigenspace, tr(P T) / dim, does not: :func:`eigenspace_response` reports that, and
:func:`radial_curve` averages responses in bins of lambda (the "radial" curve of the plots).

On the torus, L and every circulant T are diagonalized by the 2-D DFT: L's eigenvalues are
1 - (cos w_y + cos w_x) / 2 for w = 2 pi k / n, T's eigenvalues are the DFT of its stencil
(:func:`stencil_dft`), and the eigenspace-mean response at lambda equals the mean of the stencil's
DFT over the frequencies k with lambda(k) = lambda. When T is a polynomial in L (the 4-neighbour
average I - L, the Laplacian stencil 4 L) U^T T U is diagonal and r_j is exactly the DFT value.

Pure functions on torch tensors (float64 by default); no nn.Module, no plotting.
"""

from __future__ import annotations

import math
from typing import Optional

import torch

from freqkit.errors import FreqkitError

__all__ = [
    "grid_adjacency",
    "grid_laplacian",
    "graph_fourier_basis",
    "window_adjacency",
    "window_average",
    "window_attention",
    "stencil_matrix",
    "stencil_dft",
    "box_stencil",
    "gaussian_stencil",
    "laplacian_stencil",
    "sharpen_stencil",
    "graph_response",
    "eigenspace_response",
    "radial_curve",
    "torus_frequencies",
    "default_windows",
    "STENCILS",
    "stencil",
]

_DTYPE = torch.float64


def _check_grid(h: int, w: int) -> tuple[int, int]:
    h, w = int(h), int(w)
    if h < 1 or w < 1:
        raise FreqkitError(f"the token grid must be at least 1 x 1, got {h} x {w}")
    return h, w


def _coords(h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Row and column of every node (N,), nodes in row-major order (node = row * W + col)."""
    rows = torch.arange(h).repeat_interleave(w)
    cols = torch.arange(w).repeat(h)
    return rows, cols


def _offsets(a: torch.Tensor, n: int, periodic: bool) -> torch.Tensor:
    """Pairwise signed offsets b - a (N, N) along one axis; on a cycle the shortest one."""
    d = a[None, :] - a[:, None]
    if periodic:
        d = (d + n // 2) % n - n // 2
    return d


def grid_adjacency(h: int, w: int, periodic: bool = False, dtype: torch.dtype = _DTYPE) -> torch.Tensor:
    """4-neighbour adjacency (N, N) of an H x W grid, N = H W; on the torus the sum of the four shifts
    (so it stays circulant and 4-regular even when a side is 1 or 2)."""
    h, w = _check_grid(h, w)
    n = h * w
    if not periodic:
        rows, cols = _coords(h, w)
        dy, dx = rows[None, :] - rows[:, None], cols[None, :] - cols[:, None]
        return ((dy.abs() + dx.abs()) == 1).to(dtype)
    idx = torch.arange(n).reshape(h, w)
    adj = torch.zeros(n, n, dtype=dtype)
    for shift, dim in ((1, 0), (-1, 0), (1, 1), (-1, 1)):
        nb = torch.roll(idx, shifts=shift, dims=dim).reshape(-1)
        adj[torch.arange(n), nb] += 1
    return adj


def grid_laplacian(h: int, w: int, periodic: bool = False, normalized: bool = True, dtype: torch.dtype = _DTYPE) -> torch.Tensor:
    """Laplacian (N, N) of the 4-neighbour grid: I - D^{-1/2} A D^{-1/2} (``normalized``) or D - A."""
    adj = grid_adjacency(h, w, periodic, dtype)
    deg = adj.sum(1)
    if not normalized:
        return torch.diag(deg) - adj
    inv = torch.where(deg > 0, deg.rsqrt(), torch.zeros_like(deg))
    return torch.eye(adj.shape[0], dtype=dtype) - inv[:, None] * adj * inv[None, :]


def graph_fourier_basis(laplacian: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Graph frequencies (N,) ascending and the orthonormal graph Fourier basis U (N, N) (columns)."""
    if laplacian.ndim != 2 or laplacian.shape[0] != laplacian.shape[1]:
        raise FreqkitError(f"expected a square Laplacian (N, N), got shape {tuple(laplacian.shape)}")
    freqs, basis = torch.linalg.eigh(laplacian)
    return freqs, basis


def window_adjacency(h: int, w: int, k: Optional[int], periodic: bool = False, dtype: torch.dtype = _DTYPE) -> torch.Tensor:
    """0/1 adjacency (N, N) of the k x k window (self included); k=None: the complete graph."""
    h, w = _check_grid(h, w)
    if k is None:
        return torch.ones(h * w, h * w, dtype=dtype)
    if k < 1 or k % 2 == 0:
        raise FreqkitError(f"window size must be a positive odd number (1, 3, 5, ...), got {k}; use k=None for the full grid")
    rows, cols = _coords(h, w)
    r = k // 2
    near = (_offsets(rows, h, periodic).abs() <= r) & (_offsets(cols, w, periodic).abs() <= r)
    return near.to(dtype)


def window_average(h: int, w: int, k: Optional[int], periodic: bool = False, dtype: torch.dtype = _DTYPE) -> torch.Tensor:
    """Row-normalized window adjacency (N, N): each token becomes the mean of its k x k window
    (fewer tokens at the border); k=None: the global average (1/N everywhere)."""
    adj = window_adjacency(h, w, k, periodic, dtype)
    return adj / adj.sum(1, keepdim=True)


def window_attention(
    tokens: torch.Tensor,
    size: tuple[int, int],
    k: Optional[int],
    scale: Optional[float] = None,
    periodic: bool = False,
) -> torch.Tensor:
    """Softmax attention (N, N) of tokens (N, C) on themselves (q = k = tokens), restricted to the
    k x k window: softmax over the window of scale * <t_i, t_j>; scale defaults to C^{-1/2}."""
    if tokens.ndim != 2:
        raise FreqkitError(f"window_attention expects tokens (N, C), got shape {tuple(tokens.shape)}")
    h, w = _check_grid(*size)
    if tokens.shape[0] != h * w:
        raise FreqkitError(
            f"window_attention: {tokens.shape[0]} tokens do not fill a {h} x {w} grid; pass size=(H, W) with H * W = N"
        )
    t = tokens.to(_DTYPE)
    logits = (t @ t.T) * (scale if scale is not None else t.shape[1] ** -0.5)
    inside = window_adjacency(h, w, k, periodic) > 0
    return logits.masked_fill(~inside, float("-inf")).softmax(dim=-1)


def stencil_matrix(stencil: torch.Tensor, h: int, w: int, periodic: bool = False, dtype: torch.dtype = _DTYPE) -> torch.Tensor:
    """The conv filter matrix T (N, N) of an odd-sized stencil (kh, kw): (T x)[p] = sum_d s[d] x[p + d],
    zero padding (``periodic``: wrapped)."""
    if stencil.ndim != 2 or stencil.shape[0] % 2 == 0 or stencil.shape[1] % 2 == 0:
        raise FreqkitError(f"a stencil must be a 2-D tensor of odd sides, got shape {tuple(stencil.shape)}")
    h, w = _check_grid(h, w)
    kh, kw = stencil.shape
    if periodic and (kh > h or kw > w):
        raise FreqkitError(
            f"a {kh} x {kw} stencil wraps onto itself on a {h} x {w} torus; use a grid at least as large as the stencil"
        )
    rows, cols = _coords(h, w)
    dy, dx = _offsets(rows, h, periodic), _offsets(cols, w, periodic)
    inside = (dy.abs() <= kh // 2) & (dx.abs() <= kw // 2)
    s = stencil.to(dtype)
    taps = s[(dy + kh // 2).clamp(0, kh - 1), (dx + kw // 2).clamp(0, kw - 1)]
    return torch.where(inside, taps, torch.zeros((), dtype=dtype))


def stencil_dft(stencil: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """DFT response (H, W) complex of a stencil as a circulant filter on the H x W torus:
    S(w) = sum_d s[d] exp(i w . d), w = 2 pi (ky / H, kx / W) on the unshifted grid."""
    h, w = _check_grid(h, w)
    kh, kw = stencil.shape
    if kh > h or kw > w:
        raise FreqkitError(f"a {kh} x {kw} stencil does not fit a {h} x {w} torus; use a larger grid")
    kernel = torch.zeros(h, w, dtype=_DTYPE)
    for i in range(kh):
        for j in range(kw):
            kernel[(i - kh // 2) % h, (j - kw // 2) % w] += float(stencil[i, j])
    # sum_d s[d] e^{+i w d} is the inverse DFT times N
    return torch.fft.ifft2(kernel.to(torch.complex128)) * (h * w)


def torus_frequencies(h: int, w: int) -> torch.Tensor:
    """Graph frequency (H, W) of every 2-D DFT mode on the torus: 1 - (cos w_y + cos w_x) / 2."""
    h, w = _check_grid(h, w)
    wy = 2 * math.pi * torch.arange(h, dtype=_DTYPE) / h
    wx = 2 * math.pi * torch.arange(w, dtype=_DTYPE) / w
    return 1.0 - (torch.cos(wy)[:, None] + torch.cos(wx)[None, :]) / 2.0


def box_stencil(k: int) -> torch.Tensor:
    """k x k uniform average (all taps 1 / k^2)."""
    if k < 1 or k % 2 == 0:
        raise FreqkitError(f"box stencil size must be odd and positive, got {k}")
    return torch.full((k, k), 1.0 / (k * k), dtype=_DTYPE)


def gaussian_stencil(k: int, sigma: float = 1.0) -> torch.Tensor:
    """k x k Gaussian, normalized to sum 1."""
    if k < 1 or k % 2 == 0 or sigma <= 0:
        raise FreqkitError(f"gaussian stencil needs an odd size and sigma > 0, got k={k}, sigma={sigma}")
    t = torch.arange(k, dtype=_DTYPE) - k // 2
    g = torch.exp(-(t[:, None] ** 2 + t[None, :] ** 2) / (2 * sigma**2))
    return g / g.sum()


def laplacian_stencil() -> torch.Tensor:
    """The 5-point Laplacian [[0, -1, 0], [-1, 4, -1], [0, -1, 0]] (negative taps, sum 0)."""
    return torch.tensor([[0.0, -1.0, 0.0], [-1.0, 4.0, -1.0], [0.0, -1.0, 0.0]], dtype=_DTYPE)


def sharpen_stencil(amount: float = 1.0) -> torch.Tensor:
    """Identity plus ``amount`` times the 5-point Laplacian (negative taps, sum 1)."""
    s = amount * laplacian_stencil()
    s[1, 1] += 1.0
    return s


def graph_response(filter_matrix: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """r_j = (U^T T U)_jj (N,): the response of filter T (N, N) at each graph frequency of basis U (N, N)."""
    if filter_matrix.shape != (basis.shape[0], basis.shape[0]):
        raise FreqkitError(
            f"filter matrix {tuple(filter_matrix.shape)} does not match the basis {tuple(basis.shape)}; build both on the same grid"
        )
    u = basis.to(_DTYPE)
    return ((filter_matrix.to(_DTYPE) @ u) * u).sum(0)


def eigenspace_response(
    filter_matrix: torch.Tensor, freqs: torch.Tensor, basis: torch.Tensor, tol: float = 1e-8
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Basis-independent response: (distinct graph frequencies (M,), mean r_j over each eigenspace (M,),
    eigenspace dimensions (M,)); eigenvalues closer than ``tol`` count as equal."""
    r = graph_response(filter_matrix, basis)
    f = freqs.to(_DTYPE)
    new_group = torch.ones_like(f, dtype=torch.bool)
    new_group[1:] = (f[1:] - f[:-1]) > tol
    gid = torch.cumsum(new_group.long(), 0) - 1
    m = int(gid[-1]) + 1
    counts = torch.zeros(m, dtype=_DTYPE).index_add_(0, gid, torch.ones_like(f))
    mean_r = torch.zeros(m, dtype=_DTYPE).index_add_(0, gid, r) / counts
    mean_f = torch.zeros(m, dtype=_DTYPE).index_add_(0, gid, f) / counts
    return mean_f, mean_r, counts.long()


def radial_curve(
    freqs: torch.Tensor, response: torch.Tensor, bins: int = 16, weights: Optional[torch.Tensor] = None, max_freq: float = 2.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean response in ``bins`` equal bins of graph frequency over [0, max_freq]: (centres (K,), means (K,)),
    empty bins left out; ``weights`` (e.g. eigenspace dimensions) weight each entry."""
    if bins < 1:
        raise FreqkitError(f"radial_curve needs at least one bin, got {bins}")
    f, r = freqs.to(_DTYPE), response.to(_DTYPE)
    wts = torch.ones_like(f) if weights is None else weights.to(_DTYPE)
    idx = (f / max_freq * bins).floor().long().clamp(0, bins - 1)
    total = torch.zeros(bins, dtype=_DTYPE).index_add_(0, idx, wts)
    acc = torch.zeros(bins, dtype=_DTYPE).index_add_(0, idx, wts * r)
    centres = (torch.arange(bins, dtype=_DTYPE) + 0.5) * max_freq / bins
    keep = total > 0
    return centres[keep], acc[keep] / total[keep]


def default_windows(h: int, w: int) -> list[Optional[int]]:
    """Window sizes 1, 3, 5, ... below the grid's larger side, then None (the full grid)."""
    side = max(h, w)
    return [k for k in range(1, 2 * side, 2) if k < side] + [None]


# named conv stencils of freqkit simulate: name -> (maker, description)
STENCILS: dict[str, tuple] = {
    "box3": (lambda: box_stencil(3), "3 x 3 box average"),
    "box5": (lambda: box_stencil(5), "5 x 5 box average"),
    "gauss3": (lambda: gaussian_stencil(3, 0.8), "3 x 3 Gaussian, sigma 0.8"),
    "gauss5": (lambda: gaussian_stencil(5, 1.0), "5 x 5 Gaussian, sigma 1"),
    "laplacian": (laplacian_stencil, "4-neighbour Laplacian (high-pass)"),
    "sharpen": (sharpen_stencil, "identity + Laplacian (high-boost)"),
}


def stencil(name: str) -> torch.Tensor:
    """The named (k, k) stencil of :data:`STENCILS`; an unknown name raises a FreqkitError listing them."""
    if name not in STENCILS:
        raise FreqkitError(f"unknown stencil {name!r}; choose from {', '.join(STENCILS)}")
    return STENCILS[name][0]()
