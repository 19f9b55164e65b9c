"""Training and evaluation: classification and segmentation loops, single process or torchrun DDP.

``freqkit.train(TrainConfig(model="vit_mini+fdam", data="shapes", steps=300))`` returns a
:class:`TrainResult`; ``evaluate(model, dataset, task, num_classes)`` returns metrics;
``build_model("vit_mini+fdam", ...)`` turns a model spec into a network (see :mod:`freqkit.models.spec`).

This package is callable: ``freqkit.train(config, model=None, datasets=None)`` is
:func:`freqkit.train.loop.train`, so the function and the package (``freqkit.train.TrainConfig``) share
one name. Its names load lazily so that the CLI can read :class:`TrainConfig` without importing torch.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

# public name -> module that defines it
_LAZY: dict[str, str] = {
    "BoundaryF1": "freqkit.train.metrics",
    "MODEL_PRESETS": "freqkit.models.spec",
    "RECIPES": "freqkit.train.recipes",
    "RunDir": "freqkit.train.rundir",
    "dense_logits": "freqkit.train.evaluate",
    "evaluate_dense": "freqkit.train.evaluate",
    "init_backbone": "freqkit.models.spec",
    "resolve_config": "freqkit.train.config",
    "TrainConfig": "freqkit.train.config",
    "TrainResult": "freqkit.train.loop",
    "boundary_f1": "freqkit.train.metrics",
    "build_metrics": "freqkit.train.metrics",
    "build_model": "freqkit.models.spec",
    "build_optimizer": "freqkit.train.optim",
    "evaluate": "freqkit.train.evaluate",
    "input_stats": "freqkit.train.evaluate",
    "load_train_state": "freqkit.train.checkpoint",
    "lr_factor": "freqkit.train.optim",
    "normalize": "freqkit.train.evaluate",
    "param_groups": "freqkit.train.optim",
    "parse_model_spec": "freqkit.models.spec",
    "preflight": "freqkit.train.setup",
    "save_train_state": "freqkit.train.checkpoint",
    "train": "freqkit.train.loop",
}
__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'freqkit.train' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


class _CallableModule(types.ModuleType):
    """``freqkit.train(...)`` calls :func:`freqkit.train.loop.train`."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from freqkit.train.loop import train

        return train(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
