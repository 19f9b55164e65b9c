"""Centered kernel alignment (CKA) of representations: the full-data linear CKA (Kornblith et al. 2019)
and the mini-batch estimator built on the unbiased HSIC (Song et al. 2012; Nguyen et al. 2021), which
streams: sum ``hsic_matrix`` over mini-batches, then ``cka_from_hsic``.

Everything runs in float64 (CKA is a ratio of differences of large sums); results come back in
the input's floating dtype. A representation without variance has no defined CKA; it gets 0.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from freqkit.errors import FreqkitError
from freqkit.spectral._common import check_ndim, to_compute, to_output

__all__ = ["linear_cka", "unbiased_hsic", "hsic_matrix", "cka_from_hsic", "minibatch_cka"]


def _f64(x: torch.Tensor) -> torch.Tensor:
    # MPS has no float64: its inputs go through the CPU
    return to_compute(x).to("cpu" if x.device.type == "mps" else x.device, torch.float64)


def linear_cka(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Linear CKA (Kornblith et al. 2019) of features x (N, C1) and y (N, C2) of the same N samples -> scalar.

    ||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F) with column-centred Xc, Yc: in [0, 1], 1 for
    representations equal up to an orthogonal transform and isotropic scaling. Needs N >= 2; a
    constant x or y gives 0.
    """
    check_ndim(x, (2,), "x", "(N, C1)")
    check_ndim(y, (2,), "y", "(N, C2)")
    if x.shape[0] != y.shape[0]:
        raise FreqkitError(f"x has {x.shape[0]} samples but y has {y.shape[0]}; pass features of the same samples (rows)")
    if x.shape[0] < 2:
        raise FreqkitError(f"linear_cka needs at least 2 samples (rows), got {x.shape[0]}")
    xc, yc = _f64(x), _f64(y)
    xc = xc - xc.mean(dim=0, keepdim=True)
    yc = yc - yc.mean(dim=0, keepdim=True)
    num = torch.linalg.matrix_norm(yc.T @ xc).square()
    den = torch.linalg.matrix_norm(xc.T @ xc) * torch.linalg.matrix_norm(yc.T @ yc)
    cka = torch.where(den > 0, num / torch.where(den > 0, den, torch.ones_like(den)), torch.zeros_like(num))
    return to_output(cka, x).to(x.device)


def unbiased_hsic(k: torch.Tensor, l: torch.Tensor) -> torch.Tensor:
    """Unbiased HSIC estimator (Song et al. 2012) of kernel matrices k, l (..., n, n), n >= 4 -> (...).

    With K~, L~ the kernels with zeroed diagonals:
    [tr(K~ L~) + 1'K~1 1'L~1 / ((n-1)(n-2)) - 2 / (n-2) 1'K~L~1] / (n (n-3)).
    """
    check_ndim(k, tuple(range(2, 16)), "k", "(..., n, n)")
    check_ndim(l, tuple(range(2, 16)), "l", "(..., n, n)")
    if k.shape != l.shape or k.shape[-1] != k.shape[-2]:
        raise FreqkitError(f"k {tuple(k.shape)} and l {tuple(l.shape)} must be square kernel matrices of the same shape")
    n = k.shape[-1]
    if n < 4:
        raise FreqkitError(f"the unbiased HSIC needs at least 4 samples, got n={n}")
    kt, lt = _zero_diag(_f64(k)), _zero_diag(_f64(l))
    trace = (kt * lt).sum(dim=(-2, -1))
    sums = kt.sum(dim=(-2, -1)) * lt.sum(dim=(-2, -1)) / ((n - 1) * (n - 2))
    cross = (kt.sum(dim=-1) * lt.sum(dim=-1)).sum(dim=-1) * (2.0 / (n - 2))
    return to_output((trace + sums - cross) / (n * (n - 3)), k).to(k.device)


def hsic_matrix(features: Sequence[torch.Tensor]) -> torch.Tensor:
    """Unbiased HSIC of the linear kernels of every pair of L representations, per mini-batch -> (G, L, L) float64.

    ``features[l]`` is (G, n, C_l): G mini-batches of the same n samples (n >= 4) seen by
    representation l (widths may differ). Entry (g, l, m) is ``unbiased_hsic`` of X_l X_l^T and
    X_m X_m^T of mini-batch g. Memory: G * L * n^2 float64.
    """
    feats = list(features)
    if not feats:
        raise FreqkitError("hsic_matrix got no representations; pass a list of (G, n, C) tensors")
    for i, f in enumerate(feats):
        check_ndim(f, (3,), f"features[{i}]", "(G, n, C)")
        if f.shape[:2] != feats[0].shape[:2]:
            raise FreqkitError(
                f"features[{i}] has {tuple(f.shape[:2])} (mini-batches, samples) but features[0] has {tuple(feats[0].shape[:2])}; "
                "every representation must see the same samples"
            )
    g, n = feats[0].shape[:2]
    if n < 4:
        raise FreqkitError(f"the unbiased HSIC needs at least 4 samples per mini-batch, got n={n}")
    grams = torch.stack([_gram_zero_diag(_f64(f)) for f in feats], dim=1)  # (G, L, n, n)
    flat = grams.flatten(2)
    trace = flat @ flat.transpose(1, 2)  # (G, L, L)
    rows = grams.sum(dim=-1)  # (G, L, n)
    tot = rows.sum(dim=-1)  # (G, L)
    cross = rows @ rows.transpose(1, 2)
    sums = tot[:, :, None] * tot[:, None, :] / ((n - 1) * (n - 2))
    return (trace + sums - cross * (2.0 / (n - 2))) / (n * (n - 3))


def cka_from_hsic(hsic: torch.Tensor) -> torch.Tensor:
    """CKA matrix hsic_lm / sqrt(hsic_ll hsic_mm) of a summed (L, L) HSIC matrix -> (L, L); 0 where undefined."""
    check_ndim(hsic, (2,), "hsic", "(L, L)")
    if hsic.shape[0] != hsic.shape[1]:
        raise FreqkitError(f"hsic must be square (L, L), got {tuple(hsic.shape)}")
    d = torch.diagonal(hsic).clamp(min=0)
    den = torch.sqrt(d[:, None] * d[None, :])
    return torch.where(den > 0, hsic / torch.where(den > 0, den, torch.ones_like(den)), torch.zeros_like(hsic))


def minibatch_cka(features: Sequence[torch.Tensor]) -> torch.Tensor:
    """Mini-batch linear CKA (Nguyen et al. 2021) of L representations, each (G, n, C_l) -> (L, L).

    The HSIC terms are averaged over the G mini-batches before the ratio, which makes the estimate
    consistent in the number of mini-batches and lets it stream over a dataset.
    """
    feats = list(features)
    return to_output(cka_from_hsic(hsic_matrix(feats).sum(dim=0)), feats[0]).to(feats[0].device)


def _gram_zero_diag(f: torch.Tensor) -> torch.Tensor:
    """The linear-kernel Gram matrices f f^T (G, n, n) of features (G, n, C) with a zero diagonal."""
    k = f @ f.transpose(1, 2)
    k.diagonal(dim1=-2, dim2=-1).zero_()  # a fresh product: zeroed in place, exactly as k - diag(k)
    return k


def _zero_diag(k: torch.Tensor) -> torch.Tensor:
    return k - torch.diag_embed(torch.diagonal(k, dim1=-2, dim2=-1))
