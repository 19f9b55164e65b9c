"""Make ``import freqkit`` enough for ``timm.create_model`` to know every freqkit model.

Importing timm costs seconds, and ``freqkit --help`` (which imports this package) must stay instant,
so registration is tied to timm's own import instead of freqkit's: if timm is already imported, the
models register now; otherwise a one-shot import hook registers them right after ``timm`` finishes
importing, whoever imports it. When freqkit's own modules import timm (``freqkit.layers`` does), the
registration waits until the outermost freqkit module being imported has finished, because importing
``freqkit.models`` in the middle would meet half-initialized freqkit modules.
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


def _freqkit_busy(done: str = "") -> bool:
    """Whether a freqkit module other than ``done`` (whose code has just run) is still executing its import."""
    for name, module in list(sys.modules.items()):
        if (name == "freqkit" or name.startswith("freqkit.")) and name != done:
            if getattr(getattr(module, "__spec__", None), "_initializing", False):
                return True
    return False


def _maybe_register(done: str = "") -> None:
    if "timm" not in sys.modules or _freqkit_busy(done):
        return
    _remove_finder()
    try:
        importlib.import_module("freqkit.models")
    except Exception as err:  # never break the user's import: say what failed instead
        warnings.warn(f"freqkit could not register its models with timm ({type(err).__name__}: {err})", stacklevel=3)


class _Loader(importlib.abc.Loader):
    """Runs the wrapped module's code, then registers freqkit's models if timm is imported and nothing is half-done."""

    def __init__(self, inner: importlib.abc.Loader) -> None:
        self._inner = inner

    def __getattr__(self, name: str):
        # runpy (python -m freqkit) and tools ask the loader for get_code, get_source, is_package, ...
        return getattr(self._inner, name)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> Optional[ModuleType]:
        return self._inner.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self._inner.exec_module(module)
        _maybe_register(module.__name__)


class _Finder(importlib.abc.MetaPathFinder):
    """Wraps the loaders of ``timm`` and of freqkit's submodules until the registration has happened."""

    def find_spec(self, fullname: str, path: Optional[Sequence[str]], target: Optional[ModuleType] = None):
        if fullname != "timm" and not fullname.startswith("freqkit."):
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None:
            return spec
        spec.loader = _Loader(spec.loader)
        return spec


def _remove_finder() -> None:
    sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _Finder)]


def register_with_timm() -> None:
    """Register freqkit's models with timm now if timm is imported, else as soon as it is (idempotent)."""
    if "timm" in sys.modules:
        _maybe_register("freqkit")
    if "timm" not in sys.modules and not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.insert(0, _Finder())
