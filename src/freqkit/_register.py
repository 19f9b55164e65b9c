"""Make ``import freqkit`` enough for ``timm.create_model`` to know every freqkit model.

Importing timm costs seconds, and ``freqkit --help`` (which imports this package) must stay instant,
so registration is tied to timm's own import instead of freqkit's: if timm is already imported, the
models register now; otherwise a one-shot import hook registers them right after ``timm`` finishes
importing, whoever imports it. Either way the first ``timm.create_model`` call sees them.
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import warnings
from types import ModuleType
from typing import Optional, Sequence

__all__ = ["register_with_timm"]


def _import_models() -> None:
    try:
        importlib.import_module("freqkit.models")
    except Exception as err:  # never break `import timm` for the user: say what failed instead
        warnings.warn(f"freqkit could not register its models with timm ({type(err).__name__}: {err})", stacklevel=3)


class _RegisteringLoader(importlib.abc.Loader):
    """Wraps timm's loader: runs timm's module code, then imports ``freqkit.models`` (which registers)."""

    def __init__(self, inner: importlib.abc.Loader) -> None:
        self._inner = inner

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> Optional[ModuleType]:
        return self._inner.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self._inner.exec_module(module)
        _import_models()


class _TimmFinder(importlib.abc.MetaPathFinder):
    """One-shot finder: the first import of the top-level ``timm`` package gets a registering loader."""

    def find_spec(self, fullname: str, path: Optional[Sequence[str]], target: Optional[ModuleType] = None):
        if fullname != "timm":
            return None
        _remove_finder()
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None:
            return spec
        spec.loader = _RegisteringLoader(spec.loader)
        return spec


def _remove_finder() -> None:
    sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _TimmFinder)]


def register_with_timm() -> None:
    """Register freqkit's models with timm now if timm is imported, else as soon as it is (idempotent)."""
    if "timm" in sys.modules:
        _remove_finder()
        _import_models()
    elif not any(isinstance(f, _TimmFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _TimmFinder())
