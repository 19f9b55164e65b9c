"""Float64 running sums of per-image statistics, their resume state, and their sum over torchrun processes.

Every statistic of a report is a sum over images of a per-image value, so the sums of any split of the
images (batches, processes, an interrupted and resumed run) add up to those of one pass.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Optional

import torch

__all__ = ["Accumulator", "all_reduce"]


class Accumulator:
    """Running sums of one model's statistics (or of the model-by-model CKA): ``sums["<layer>/<key>"]`` over ``n`` images.

    ``meta`` holds one dict per captured layer (name, kind, grid_size, channels, num_prefix_tokens, heads);
    layer index -1 holds whole-model sums (cross-layer similarity, HSIC).
    """

    def __init__(self) -> None:
        self.n = 0
        self.sums: dict[str, torch.Tensor] = {}
        self.meta: list[dict[str, Any]] = []
        self.cross_ok = True
        self.image_size: Optional[list[int]] = None

    def add(self, idx: int, key: str, value: torch.Tensor, weight: int = 1) -> None:
        """Add ``value * weight`` (any shape, kept float64 on the CPU) to the sum of layer ``idx``'s ``key``."""
        v = value.detach().to("cpu", torch.float64) * weight
        k = f"{idx}/{key}"
        self.sums[k] = v if k not in self.sums else self.sums[k] + v

    def mean(self, idx: int, key: str) -> Optional[torch.Tensor]:
        """The sum divided by the image count; None when nothing was added (or no image)."""
        v = self.sums.get(f"{idx}/{key}")
        return None if v is None or self.n == 0 else v / self.n

    def state(self) -> dict[str, Any]:
        """Everything needed to continue accumulating (tensors and plain values, for ``torch.save``)."""
        meta = [dict(m, grid_size=list(m["grid_size"])) for m in self.meta]
        return {"n": self.n, "sums": dict(self.sums), "meta": meta, "cross_ok": self.cross_ok, "image_size": self.image_size}

    def load(self, state: Mapping[str, Any]) -> None:
        """Continue from :meth:`state`."""
        self.n = int(state["n"])
        self.sums = {str(k): v.to(torch.float64) for k, v in state["sums"].items()}
        self.meta = [dict(m, grid_size=tuple(m["grid_size"])) for m in state["meta"]]
        self.cross_ok = bool(state["cross_ok"])
        self.image_size = None if state.get("image_size") is None else [int(v) for v in state["image_size"]]


def _gather_layout(accs: Mapping[str, Accumulator]) -> list[tuple[str, Optional[str], list[int]]]:
    """Agree on every rank's keys and shapes (a rank that saw no image has none) -> (model, key, shape) in one order."""
    import torch.distributed as dist

    summary = {k: (a.meta, {s: list(v.shape) for s, v in a.sums.items()}, a.cross_ok, a.image_size) for k, a in accs.items()}
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, summary)
    layout: list[tuple[str, Optional[str], list[int]]] = []
    for name in sorted(accs):
        acc = accs[name]
        shapes: dict[str, list[int]] = {}
        for g in gathered:
            meta, keys, ok, size = g[name]
            if meta and not acc.meta:
                acc.meta = [dict(m, grid_size=tuple(m["grid_size"])) for m in meta]
            if size is not None and acc.image_size is None:
                acc.image_size = size
            acc.cross_ok = acc.cross_ok and ok
            shapes.update(keys)
        layout += [(name, key, shapes[key]) for key in sorted(shapes)]
        layout.append((name, None, [1]))  # the image count
    return layout


def all_reduce(accs: Mapping[str, Accumulator]) -> None:
    """Sum every rank's accumulators in place, in one all-reduce (gloo on CPU, NCCL on GPU); ranks without images add zeros."""
    import torch.distributed as dist

    layout = _gather_layout(accs)
    parts = [
        torch.tensor([float(accs[name].n)], dtype=torch.float64)
        if key is None
        else accs[name].sums.get(key, torch.zeros(shape, dtype=torch.float64)).reshape(-1)
        for name, key, shape in layout
    ]
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    flat = torch.cat(parts).to(device)
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    chunks = flat.cpu().split([math.prod(shape) for _, _, shape in layout])
    for (name, key, shape), chunk in zip(layout, chunks):
        if key is None:
            accs[name].n = int(round(float(chunk[0])))
        else:
            accs[name].sums[key] = chunk.reshape(shape).clone()
