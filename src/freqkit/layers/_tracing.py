"""Whether a forward runs under a graph tracer, for the few places where that changes what Python may do."""

from __future__ import annotations

import torch

__all__ = ["fx_tracing", "is_tracing", "no_graph", "has_hooks"]


def fx_tracing() -> bool:
    """True while torch.fx traces symbolically: sizes are proxies then, so Python checks on them are skipped."""
    fx = torch.fx._symbolic_trace
    # is_fx_symbolic_tracing (newer torch) excludes torch.export, which works on real sizes
    check = getattr(fx, "is_fx_symbolic_tracing", None) or fx.is_fx_tracing
    return bool(check())


def is_tracing() -> bool:
    """True under torch.fx, TorchScript tracing, or dynamo (torch.compile / torch.export): nothing is cached then."""
    return fx_tracing() or bool(torch.jit.is_tracing()) or bool(torch.compiler.is_compiling())


def no_graph(*tensors: torch.Tensor) -> bool:
    """True when no autograd graph is needed through ``tensors`` and nothing traces, so buffers may be reused in place."""
    if is_tracing():
        return False
    return not (torch.is_grad_enabled() and any(t.requires_grad for t in tensors))


def has_hooks(module: torch.nn.Module) -> bool:
    """True when calling ``module`` would run forward hooks (its own or global ones), which a direct method call would skip."""
    from torch.nn.modules import module as _m

    return bool(module._forward_hooks or module._forward_pre_hooks or _m._global_forward_hooks or _m._global_forward_pre_hooks)
