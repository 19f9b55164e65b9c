"""The one caching scheme of freqkit's layers: a small per-module store of tensors that a forward
would otherwise rebuild every call.

Two kinds of entries, both in one bounded store (least recently used entries go first, so a model
that sees many input sizes cannot grow it without bound):

- ``constant(key, build)``: depends on no parameter (DFT / resize matrices, masks, bases for one
  grid). Cached in every mode; the key must name everything the value depends on (sizes, device).
- ``derived(module, key, params, build)``: computed from parameters (merged, permuted, resized
  weights). Cached only in eval mode with autograd off; the key includes every source parameter's
  version counter, storage, device and dtype, so an optimizer step, ``load_state_dict``, an in-place
  edit or ``.to()`` rebuilds it instead of returning a stale value; a training-mode forward drops
  these entries.

Nothing is cached while compiling, exporting or tracing (the values then belong in the graph), and
values are built outside inference mode, so a constant first built under ``torch.inference_mode``
can still be used later by a forward that needs gradients. The store is not state: it never
appears in ``state_dict``.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Callable, Sequence

import torch
from torch import nn

from freqkit.layers._tracing import is_tracing

__all__ = ["DerivedCache"]


class DerivedCache:
    """Bounded key -> value store with ``constant`` and ``derived`` entries (see the module docstring)."""

    def __init__(self, max_entries: int = 8) -> None:
        self.max_entries = int(max_entries)
        self._store: OrderedDict[tuple, tuple[tuple, object]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._store)

    def clear(self) -> None:
        """Forget every entry."""
        self._store.clear()

    def _drop_derived(self) -> None:
        for key in [k for k in self._store if k[0] == "derived"]:
            del self._store[key]

    def _lookup(self, key: tuple, version: tuple, build: Callable[[], object]) -> object:
        hit = self._store.get(key)
        if hit is not None and hit[0] == version:
            self._store.move_to_end(key)
            return hit[1]
        with torch.inference_mode(False), torch.no_grad():
            value = build()
        self._store[key] = (version, value)
        self._store.move_to_end(key)
        while len(self._store) > self.max_entries:
            self._store.popitem(last=False)
        return value

    def constant(self, key: tuple, build: Callable[[], object]) -> object:
        """``build()`` of a parameter-free value, cached under ``key`` in every mode (not while tracing)."""
        if is_tracing():
            return build()
        return self._lookup(("const", *key), (), build)

    def derived(self, module: nn.Module, key: tuple, params: Sequence[torch.Tensor], build: Callable[[], object]) -> object:
        """``build()`` of a value computed from ``params``; cached when ``module`` is in eval mode and autograd is off."""
        if module.training or torch.is_grad_enabled() or is_tracing():
            if module.training and not is_tracing():
                self._drop_derived()  # training updates the sources every step: free what eval cached
            return build()
        version = tuple((p._version, p.data_ptr(), p.device, p.dtype) for p in params)
        return self._lookup(("derived", *key), version, build)
