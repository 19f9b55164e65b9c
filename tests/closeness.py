"""Tolerances scaled to the magnitude of what a test compares (float32 rounding grows with the values)."""

from __future__ import annotations

import numpy as np
import torch


def scale_of(want) -> float:
    """Largest magnitude in ``want`` (1.0 for an all-zero reference), the unit that absolute tolerances multiply."""
    t = torch.as_tensor(np.asarray(want) if not isinstance(want, torch.Tensor) else want)
    s = float(t.detach().abs().max()) if t.numel() else 0.0
    return s if s > 0 else 1.0


def assert_scaled_close(got, want, rel: float = 1e-5, msg: str = "") -> None:
    """|got - want| <= rel * (|want| + max|want|) elementwise: relative error, floored at rel times the overall scale."""
    g = got if isinstance(got, torch.Tensor) else torch.as_tensor(np.asarray(got))
    w = want if isinstance(want, torch.Tensor) else torch.as_tensor(np.asarray(want))
    g, w = g.detach(), w.detach().to(g.dtype)
    torch.testing.assert_close(g, w, rtol=rel, atol=rel * scale_of(w), msg=(lambda m: f"{msg}: {m}") if msg else None)
