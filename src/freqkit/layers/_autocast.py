"""``no_autocast(device)``: float32 islands under autocast, on any device (meta included)."""

from __future__ import annotations

import contextlib

import torch

__all__ = ["no_autocast"]


def no_autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """``torch.autocast(device.type, enabled=False)`` where autocast exists for that device, else a no-op context.

    ``torch.autocast("meta")`` raises, yet shape-only tools (FLOP counters, sharded init) run models on meta.
    """
    if torch.amp.is_autocast_available(device.type):
        return torch.autocast(device.type, enabled=False)
    return contextlib.nullcontext()
