"""Resume state of :func:`freqkit.analyze`: the running sums of every model saved per rank, refused when the run differs."""
from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Optional

from torch import nn

from freqkit.analysis.accumulator import Accumulator
from freqkit.analysis.stream import atomic_save, load_state
from freqkit.errors import FreqkitError

__all__ = ["ResumeState", "weights_digest"]

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
    statistics saved by any other run are refused with the keys that differ.
    """

    def __init__(self, state_dir: Optional[Path], rank: int, world: int, data: Any, settings: Mapping[str, Any],
                 models: Mapping[str, nn.Module]) -> None:
        self.path = None if state_dir is None else Path(state_dir) / f"analyze-state-rank{rank}of{world}.pt"
        self.fingerprint = {
            "version": _STATE_VERSION, "world_size": world, "rank": rank, "data": data, "settings": repr(dict(settings)),
            "models": [[n, type(m).__name__, weights_digest(m)] for n, m in models.items()],
        }

    def load(self, accs: Mapping[str, Accumulator], joint: Accumulator) -> int:
        """Fill ``accs`` and ``joint`` from the saved state, if any; returns the source position to continue from (0 without one)."""
        if self.path is None or not self.path.is_file():
            return 0
        saved = load_state(self.path)
        if saved.get("fingerprint") != self.fingerprint:
            diff = [k for k in self.fingerprint if saved.get("fingerprint", {}).get(k) != self.fingerprint[k]]
            raise FreqkitError(
                f"the statistics in {str(self.path)!r} were saved by a different run (differs in: {', '.join(diff)}); "
                "resume with the same models, data, settings and number of processes, or pass resume=False"
            )
        for name, st in saved["models"].items():
            accs[name].load(st)
        joint.load(saved["joint"])
        return int(saved["position"])

    def save(self, position: int, accs: Mapping[str, Accumulator], joint: Accumulator) -> None:
        """Write the statistics after ``position`` source items (atomically); nothing without a ``state_dir``."""
        if self.path is not None:
            state = {"fingerprint": self.fingerprint, "position": position, "models": {k: a.state() for k, a in accs.items()}, "joint": joint.state()}
            atomic_save(state, self.path)
