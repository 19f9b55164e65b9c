"""Whether a forward runs under a graph tracer, for the few places where that changes what Python may do."""

from __future__ import annotations

import torch

__all__ = ["fx_tracing", "is_tracing"]


def fx_tracing() -> bool:
    """True while torch.fx traces symbolically: sizes are proxies then, so Python checks on them are skipped."""
    fx = torch.fx._symbolic_trace
    # is_fx_symbolic_tracing (newer torch) excludes torch.export, which works on real sizes
    check = getattr(fx, "is_fx_symbolic_tracing", None) or fx.is_fx_tracing
    return bool(check())


def is_tracing() -> bool:
    """True under torch.fx, TorchScript tracing, or dynamo (torch.compile / torch.export): nothing is cached then."""
    return fx_tracing() or bool(torch.jit.is_tracing()) or bool(torch.compiler.is_compiling())
