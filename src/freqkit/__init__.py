"""freqkit: diagnose, fix and train the frequency behaviour of vision backbones.

The public API is loaded lazily (PEP 562) so that ``freqkit --help`` does not import torch or
timm. ``import freqkit`` is enough for ``timm.create_model`` to know every freqkit model: the models
register when timm is imported (or at once, if it already is); see :mod:`freqkit._register`.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> module that defines it
_LAZY: dict[str, str] = {
    "analyze": "freqkit.analysis",
    "Report": "freqkit.analysis",
    "capture": "freqkit.probe",
    "Capture": "freqkit.probe",
    "convert": "freqkit.models.convert",
    "load_checkpoint": "freqkit.models.checkpoint",
    "load_state_dict_file": "freqkit.models.checkpoint",
    "flops": "freqkit.analysis.flops",
    "FreqkitError": "freqkit.errors",
    "load_fdam_checkpoint": "freqkit.models.fdam_vit",
    "TrainConfig": "freqkit.train.config",
    "TrainResult": "freqkit.train.loop",
    "compare": "freqkit.experiment",
    "Comparison": "freqkit.experiment",
    "simulate": "freqkit.experiment",
    "Simulation": "freqkit.experiment",
    "open_run": "freqkit.experiment",
    "evaluate_run": "freqkit.experiment",
    "Run": "freqkit.experiment",
    "SpectralMonitor": "freqkit.monitor",
    "MonitorHistory": "freqkit.monitor",
}
# freqkit.train is also callable: freqkit.train(config, model=None, datasets=None) trains
_SUBMODULES = ("spectral", "layers", "models", "probe", "analysis", "monitor", "data", "train", "experiment", "integrations")

__all__ = sorted(_LAZY) + list(_SUBMODULES)

from freqkit._register import register_with_timm as _register_with_timm  # noqa: E402

_register_with_timm()


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module = importlib.import_module(_LAZY[name])
        # models must be registered with timm before anything builds one by name
        importlib.import_module("freqkit.models")
        return getattr(module, name)
    if name in _SUBMODULES:
        return importlib.import_module(f"freqkit.{name}")
    raise AttributeError(f"module 'freqkit' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
