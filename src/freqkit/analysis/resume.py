"""Resume state of :func:`freqkit.analyze`: the running sums of every model saved per rank, refused when the run differs."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn

from freqkit.analysis.accumulator import Accumulator
from freqkit.analysis.stream import atomic_save, load_state
from freqkit.errors import FreqkitError

__all__ = ["ResumeState", "weights_digest", "what_changed"]

_STATE_VERSION = 1


def weights_digest(model: nn.Module) -> str:
    """A short digest of the model's weights: resuming with other weights must refuse."""
    h = hashlib.sha1()
    for name, t in model.state_dict().items():
        if t.is_floating_point() and t.numel():
            h.update(name.encode())
            h.update(f"{float(t.double().sum()):.10e}".encode())
    return h.hexdigest()[:16]


class ResumeState:
    """Where one rank saves its statistics (``state_dir/analyze-state-rank<r>of<W>.pt``) and what run they belong to.

    The fingerprint holds the models (class, weight digest), the data source, the settings and the rank layout;
    statistics saved by any other run are refused, saying what changed. ``first_images`` (at most 4, for the method
    figures) are saved with the sums, so a resume with nothing left to read still draws them.
    """

    def __init__(
        self,
        state_dir: Optional[Path],
        rank: int,
        world: int,
        data: Any,
        settings: Mapping[str, Any],
        models: Mapping[str, nn.Module],
    ) -> None:
        self.path = None if state_dir is None else Path(state_dir) / f"analyze-state-rank{rank}of{world}.pt"
        self.fingerprint = {
            "version": _STATE_VERSION,
            "world_size": world,
            "rank": rank,
            "data": data,
            "settings": repr(dict(settings)),
            "models": [[n, type(m).__name__, weights_digest(m)] for n, m in models.items()],
        }
        self.first_images: Optional[torch.Tensor] = None

    def load(self, accs: Mapping[str, Accumulator], joint: Accumulator) -> int:
        """Fill ``accs`` and ``joint`` from the saved state, if any; returns the source position to continue from (0 without one)."""
        if self.path is None:
            return 0
        if not self.path.is_file():
            _check_process_count(self.path.parent, self.fingerprint["world_size"])
            return 0
        saved = load_state(self.path)
        if saved.get("fingerprint") != self.fingerprint:
            raise FreqkitError(
                f"the statistics in {str(self.path)!r} were saved by a different run ({what_changed(saved.get('fingerprint') or {}, self.fingerprint)}); "
                "resume with the same models, images, settings and number of processes, or pass resume=False"
            )
        for name, st in saved["models"].items():
            accs[name].load(st)
        joint.load(saved["joint"])
        self.first_images = saved.get("first_images")
        return int(saved["position"])

    def save(self, position: int, accs: Mapping[str, Accumulator], joint: Accumulator) -> None:
        """Write the statistics after ``position`` source items (atomically); nothing without a ``state_dir``."""
        if self.path is not None:
            state = {
                "fingerprint": self.fingerprint,
                "position": position,
                "models": {k: a.state() for k, a in accs.items()},
                "joint": joint.state(),
                "first_images": self.first_images,
            }
            atomic_save(state, self.path)


def what_changed(saved: Mapping[str, Any], now: Mapping[str, Any]) -> str:
    """What differs between a saved fingerprint and this run's, in words: 'the image files changed', 'batch_size 16 -> 8'."""
    words = {
        "world_size": "the number of processes",
        "models": "the models or their weights",
        "settings": "the analysis settings",
        "version": "the freqkit state format",
    }
    out = []
    for key in now:
        a, b = saved.get(key), now[key]
        if a == b:
            continue
        if key == "data" and isinstance(a, Mapping) and isinstance(b, Mapping):
            for k in b:
                if a.get(k) == b[k]:
                    continue
                out.append(
                    "the image files changed (a file was renamed, added, removed or resized)"
                    if k == "files"
                    else f"{k} {a.get(k)!r} -> {b[k]!r}"
                )
        else:
            out.append(
                f"{words.get(key, key)} {a!r} -> {b!r}" if key in ("world_size", "version") else f"{words.get(key, key)} changed"
            )
    return "; ".join(out) or "the saved run's fingerprint"


def _check_process_count(state_dir: Path, world: int) -> None:
    """Statistics saved by another number of processes cannot be resumed (each rank's shard would differ): say so."""
    import re

    counts = sorted(
        {int(m.group(1)) for f in state_dir.glob("analyze-state-rank*of*.pt") if (m := re.search(r"of(\d+)\.pt$", f.name))}
    )
    if counts and world not in counts:
        raise FreqkitError(
            f"the statistics in {str(state_dir)!r} were saved by {counts[0]} processes, this run has {world}; resume with "
            f"{counts[0]} processes (torchrun --nproc_per_node {counts[0]}), or pass resume=False to start again"
        )
