"""A per-module cache of tensors derived from parameters (merged, permuted, resized weights).

Used only in eval mode under no_grad and never while compiling; an entry is keyed on every source
parameter's version counter, storage, device and dtype, so an optimizer step, ``load_state_dict``,
an in-place edit or ``.to()`` makes it rebuild instead of going stale.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import nn

__all__ = ["DerivedCache"]


class DerivedCache:
    """name -> (key, value) store; ``get`` rebuilds whenever a source parameter changed."""

    def __init__(self) -> None:
        self._store: dict[tuple, tuple[tuple, object]] = {}

    def __len__(self) -> int:
        return len(self._store)

    def clear(self) -> None:
        """Forget every entry."""
        self._store.clear()

    def get(self, module: nn.Module, name: tuple, params: Sequence[torch.Tensor], build: Callable[[], object]) -> object:
        """``build()``, cached when ``module`` is in eval mode and autograd is off."""
        if module.training or torch.is_grad_enabled() or torch.compiler.is_compiling():
            return build()
        key = tuple((p._version, p.data_ptr(), p.device, p.dtype) for p in params)
        hit = self._store.get(name)
        if hit is not None and hit[0] == key:
            return hit[1]
        value = build()
        self._store[name] = (key, value)
        return value
