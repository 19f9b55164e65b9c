"""freqkit: diagnose, fix and train the frequency behaviour of vision backbones.

The public API is loaded lazily (PEP 562) so that ``freqkit --help`` does not import torch or
timm. Accessing any attribute below, or ``import freqkit.models``, registers freqkit's models
with timm.
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
}
_SUBMODULES = ("spectral", "layers", "models", "probe", "analysis", "data", "train")

__all__ = sorted(_LAZY) + list(_SUBMODULES)


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
