"""Rank diagnostics of token matrices: effective rank, stable rank, rank-collapse residual.

Each accepts tokens (B, N, C), giving (B,), or one matrix (N, C), giving a 0-d tensor. The zero
matrix has rank 0 by every measure here, so no function returns NaN on it.
"""

from __future__ import annotations

import torch

from freqkit.spectral._common import check_ndim, map_threads, to_compute, to_output


def effective_rank(x: torch.Tensor, center: bool = False) -> torch.Tensor:
    """Effective rank exp(-sum p_i log p_i), p = s / sum(s), of tokens (B, N, C) or (N, C) -> (B,) or scalar.

    s are the singular values of each (N, C) token matrix (Roy & Vetterli 2007). The SVD always runs
    in float64, whatever the input dtype: a float32 SVD (or a float32-sized cutoff) loses the small
    singular values that carry a measurable share of the entropy of e.g. softmax attention maps, and
    the result then depends on the dtype by up to about 0.6 %; in float64 a float32 input and its
    float64 copy agree to about 1e-5 relative. Zero terms are dropped (0 log 0 = 0), where "zero" means
    at most max(N, C) * float64 eps * ||X||_F (X before centering), the rounding level of the float64
    SVD (the `torch.linalg.matrix_rank` rule): without it, rounding noise (e.g. of centring identical
    tokens) would count as rank. center=True subtracts the mean token first. The zero matrix gets 0
    (its rank), not the entropy formula's undefined value; any other matrix gets a value in
    [1, min(N, C)]. The result has the input's floating dtype.
    """
    check_ndim(x, (2, 3), "x", "(B, N, C) or (N, C)")
    # MPS has no float64: its inputs go through the CPU
    xc = to_compute(x).to("cpu" if x.device.type == "mps" else x.device, torch.float64)
    n, c = xc.shape[-2:]
    tol = torch.linalg.vector_norm(xc, dim=(-2, -1), keepdim=True)[..., 0] * (max(n, c) * torch.finfo(torch.float64).eps)
    if center:
        xc = xc - xc.mean(dim=-2, keepdim=True)
    s = singular_values(xc)
    s = torch.where(s > tol, s, torch.zeros_like(s))
    total = s.sum(dim=-1, keepdim=True)
    nonzero = total > 0
    p = s / torch.where(nonzero, total, torch.ones_like(total))
    entropy = -torch.special.xlogy(p, p).sum(dim=-1)
    erank = torch.where(nonzero.squeeze(-1), torch.exp(entropy), torch.zeros_like(entropy))
    return to_output(erank, x).to(x.device)


# erank error bound (relative) below which the Gram eigenvalues stand in for the SVD (the report keeps 1e-6)
_GRAM_RTOL = 1e-8
# matrices per LAPACK call of one worker thread: small enough to spread a batch over the threads
_MIN_PER_THREAD = 8


def singular_values(x: torch.Tensor) -> torch.Tensor:
    """Singular values (..., min(N, C)), descending, of float64 matrices (..., N, C), as ``torch.linalg.svdvals``.

    The eigenvalues of the Gram matrix of the smaller side (min(N, C) squared) cost about a third of
    an SVD, but squaring the matrix loses the small singular values: an eigenvalue is only known to
    about delta = max(N, C) * eps * ||X||_F^2, so s_i = sqrt(lambda_i) is off by up to delta / (2 s_i).
    Each matrix whose first-order effective-rank error sum_i |log p_i + H| delta / (2 S s_i)
    (S = sum s, p = s / S, H the entropy) exceeds 1e-8 relative, or whose smallest eigenvalue is not
    positive, gets the SVD instead (ill-conditioned token maps, softmax attention maps).
    """
    n, c = x.shape[-2:]
    k = min(n, c)
    if k == 0 or x.numel() == 0:
        return torch.linalg.svdvals(x)
    lead = x.shape[:-2]
    m = x.reshape(-1, n, c)
    gram = m.mT @ m if c <= n else m @ m.mT  # (B, k, k), the smaller side
    lam = _lapack_batched(torch.linalg.eigvalsh, gram).flip(-1)  # descending, as svdvals
    s = lam.clamp_min(0).sqrt()
    total = s.sum(dim=-1, keepdim=True)
    pos = lam[:, -1:] > 0
    p = s / torch.where(pos, total, torch.ones_like(total))
    entropy = -torch.special.xlogy(p, p).sum(dim=-1, keepdim=True)
    delta = max(n, c) * torch.finfo(torch.float64).eps * lam.sum(dim=-1, keepdim=True).abs()
    denom = 2 * total * torch.where(pos, s, torch.ones_like(s))
    bound = (delta / denom * (torch.log(torch.where(pos, p, torch.ones_like(p))) + entropy).abs()).sum(dim=-1)
    bad = ~(pos.squeeze(-1) & (bound <= _GRAM_RTOL))
    if bool(bad.any()):
        idx = bad.nonzero().squeeze(-1)
        s = s.index_copy(0, idx, _lapack_batched(torch.linalg.svdvals, m.index_select(0, idx)))
    return s.reshape(*lead, k)


def _lapack_batched(fn, x: torch.Tensor) -> torch.Tensor:
    """``fn`` (eigvalsh / svdvals) of a batch of matrices (B, ., .) on the CPU, split over torch's threads.

    torch runs a CPU batch through LAPACK one matrix after another, and MKL's own threads spin on
    matrices this small (2 threads: about 3x the CPU time of 1, and slower in wall time). So each
    thread of a pool takes a slice of the batch with MKL at 1 thread, which also gives every matrix
    exactly the values of a 1-thread run. Other devices, or one thread, call ``fn`` once.
    """
    threads = torch.get_num_threads()
    if x.device.type != "cpu" or threads <= 1 or x.shape[0] < 2 * _MIN_PER_THREAD:
        return fn(x)
    chunks = x.tensor_split(min(threads, x.shape[0] // _MIN_PER_THREAD))
    return torch.cat(map_threads(fn, chunks))


def stable_rank(x: torch.Tensor) -> torch.Tensor:
    """Stable rank ||X||_F^2 / ||X||_2^2 of tokens (B, N, C) or (N, C) -> (B,) or scalar; 0 for the zero matrix."""
    check_ndim(x, (2, 3), "x", "(B, N, C) or (N, C)")
    s = torch.linalg.svdvals(to_compute(x))
    top = s[..., 0] if s.shape[-1] else s.new_zeros(s.shape[:-1])
    fro2 = s.square().sum(dim=-1)
    spec2 = top.square()
    ok = spec2 > 0
    rank = torch.where(ok, fro2 / torch.where(ok, spec2, torch.ones_like(spec2)), torch.zeros_like(fro2))
    return to_output(rank, x)


def rank_collapse_residual(x: torch.Tensor) -> torch.Tensor:
    """Relative residual ||X - 1 mean_rows(X)|| / ||X|| of tokens (B, N, C) or (N, C) -> (B,) or scalar.

    The norm is Dong et al. (2021)'s composite sqrt(||.||_1 ||.||_inf) (max absolute column sum times
    max absolute row sum). 0 means every token is the same (full rank collapse); zero X gives 0.
    """
    check_ndim(x, (2, 3), "x", "(B, N, C) or (N, C)")
    xc = to_compute(x)
    res = xc - xc.mean(dim=-2, keepdim=True)
    num = _composite_norm(res)
    den = _composite_norm(xc)
    ok = den > 0
    ratio = torch.where(ok, num / torch.where(ok, den, torch.ones_like(den)), torch.zeros_like(num))
    return to_output(ratio, x)


def _composite_norm(m: torch.Tensor) -> torch.Tensor:
    """sqrt(||M||_1 ||M||_inf) of matrices (..., N, C)."""
    a = m.abs()
    if a.shape[-1] == 0 or a.shape[-2] == 0:
        return a.new_zeros(a.shape[:-2])
    norm_1 = a.sum(dim=-2).amax(dim=-1)
    norm_inf = a.sum(dim=-1).amax(dim=-1)
    return torch.sqrt(norm_1 * norm_inf)
