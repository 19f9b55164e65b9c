"""Brute-force references shared by the spectral tests (written from the formulas, not from freqkit)."""

import cmath
import math
from types import SimpleNamespace

import numpy as np
import pytest


def dft2_bruteforce(x: np.ndarray) -> np.ndarray:
    """The 2-D DFT by its definition: F(u, v) = sum_p sum_q x(p, q) exp(-j 2 pi (u p / H + v q / W)), for (..., H, W)."""
    x = np.asarray(x, dtype=np.float64)
    h, w = x.shape[-2:]
    out = np.zeros(x.shape, dtype=np.complex128)
    for u in range(h):
        for v in range(w):
            acc = np.zeros(x.shape[:-2], dtype=np.complex128)
            for p in range(h):
                for q in range(w):
                    acc = acc + x[..., p, q] * cmath.exp(-2j * math.pi * (u * p / h + v * q / w))
            out[..., u, v] = acc
    return out


def center(f: np.ndarray) -> np.ndarray:
    """Move DC to index (H // 2, W // 2): centred[i, j] = f[(i - H // 2) % H, (j - W // 2) % W]."""
    h, w = f.shape[-2:]
    rows = [(i - h // 2) % h for i in range(h)]
    cols = [(j - w // 2) % w for j in range(w)]
    return f[..., rows, :][..., :, cols]


def freq(u: int, n: int) -> float:
    """fftfreq convention: frequency of DFT index u of n points, in [-1/2, 1/2)."""
    return u / n if u <= (n - 1) // 2 else u / n - 1.0


@pytest.fixture(scope="session")
def ref():
    """Namespace of the brute-force helpers above."""
    return SimpleNamespace(dft2=dft2_bruteforce, center=center, freq=freq)
