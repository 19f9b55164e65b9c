"""Training and evaluation: classification and segmentation loops, single process or torchrun DDP.

``train(TrainConfig(model="vit_mini+fdam", data="shapes", steps=300))`` returns a :class:`TrainResult`;
``evaluate(model, dataset, task, num_classes)`` returns metrics; ``build_model("vit_mini+fdam", ...)``
turns a model spec into a network (see :mod:`freqkit.train.models`).
"""
from freqkit.train.checkpoint import load_train_state, save_train_state
from freqkit.train.config import TrainConfig
from freqkit.train.loop import TrainResult, evaluate, input_stats, normalize, preflight, train
from freqkit.train.metrics import BoundaryF1, boundary_f1, build_metrics
from freqkit.train.models import MODEL_PRESETS, build_model, parse_model_spec
from freqkit.train.optim import build_optimizer, lr_factor, param_groups

__all__ = [
    "BoundaryF1",
    "MODEL_PRESETS",
    "TrainConfig",
    "TrainResult",
    "boundary_f1",
    "build_metrics",
    "build_model",
    "build_optimizer",
    "evaluate",
    "input_stats",
    "load_train_state",
    "lr_factor",
    "normalize",
    "param_groups",
    "parse_model_spec",
    "preflight",
    "save_train_state",
    "train",
]
