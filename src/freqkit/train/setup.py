"""What a run needs before its first step: its data, its model, the checks that fail bad input in seconds.

:func:`build_data` and :func:`build_network` turn a :class:`TrainConfig` into datasets and a network;
:func:`preflight` checks a batch of runs (every model x seed of a comparison) before any trains, on
datasets built once and shared with the runs.
"""

from __future__ import annotations

import random
from typing import Any, Optional, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from freqkit.errors import FreqkitError, ParameterError
from freqkit.io import check_writable_dir
from freqkit.train.checkpoint import unwrap
from freqkit.train.config import TrainConfig

__all__ = ["seed_everything", "amp_enabled", "check_input_size", "build_data", "build_network", "given_datasets", "preflight"]


def seed_everything(seed: int) -> None:
    """Seed torch, Python and NumPy."""
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)


def amp_enabled(amp: Optional[bool], device: torch.device) -> bool:
    """bf16 autocast on? None means: on for CUDA with bf16 support, off on CPU (supported but slow there)."""
    if amp is None:
        return device.type == "cuda" and torch.cuda.is_bf16_supported()
    return bool(amp)


def check_input_size(model: nn.Module, img_size: int, spec: str, device: torch.device) -> None:
    """Run one (1, 3, S, S) image through ``model`` (no grad, eval mode) so a size the model cannot take fails now, in one line."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, 3, img_size, img_size, device=device))
    except (RuntimeError, ValueError, AssertionError) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        patch = getattr(
            getattr(unwrap(model), "patch_embed", None) or getattr(getattr(unwrap(model), "encoder", None), "patch_embed", None),
            "patch_size",
            None,
        )
        hint = f" (patch size {patch[0] if isinstance(patch, (tuple, list)) else patch})" if patch is not None else ""
        raise FreqkitError(
            f"model {spec} cannot take {img_size}x{img_size} images{hint}: {first}; use an img_size that is a multiple of 32"
        ) from None
    finally:
        model.train(was_training)


def build_data(cfg: TrainConfig, splits: tuple[str, ...] = ("train", "val")):
    """(datasets by split, DataInfo) of ``cfg.data`` (the paper pipeline when crop_size is set)."""
    from freqkit.data import build_datasets

    return build_datasets(
        cfg.data,
        task=cfg.task,
        img_size=cfg.img_size,
        num_classes=cfg.num_classes,
        seed=cfg.seed,
        splits=splits,
        crop_size=cfg.crop_size,
        img_scale=cfg.scale,
    )


def build_network(cfg: TrainConfig, task: str, num_classes: int, img_size: int) -> nn.Module:
    """The network of ``cfg.model`` for the data, with every head setting of ``cfg``."""
    from freqkit.models.spec import build_model

    kw: dict[str, Any] = dict(drop_path_schedule=cfg.drop_path_schedule)
    if task == "segmentation":
        kw.update(
            head_norm=cfg.head_norm,
            head_dropout=cfg.head_dropout,
            aux_channels=cfg.aux_channels,
            aux_level=cfg.aux_level,
            neck=cfg.neck,
            head_init=cfg.head_init,
        )
    return build_model(cfg.model, task, num_classes, img_size, cfg.drop_path, cfg.head_channels, **kw)


def given_datasets(datasets: dict[str, Dataset], cfg: TrainConfig, info: Any = None):
    """The caller's datasets and their DataInfo (``info`` when given, else task and class count from ``cfg``, size from the first image)."""
    from freqkit.data.spec import DataInfo

    if not isinstance(datasets, dict) or not {"train", "val"} <= set(datasets):
        raise ParameterError("datasets", "must be a dict with 'train' and 'val' datasets")
    if info is not None:
        return datasets, info
    if cfg.task is None or cfg.num_classes is None:
        raise ParameterError("task", "and num_classes must be set in the config when you pass your own datasets")
    first = datasets["train"][0][0]
    if not (torch.is_tensor(first) and first.dim() == 3 and first.shape[0] == 3):
        raise ParameterError(
            "datasets",
            f"items must be (image (3, H, W) tensor in [0, 1], target); got an image of shape {tuple(getattr(first, 'shape', ()))}",
        )
    return datasets, DataInfo(
        name=cfg.data, task=cfg.task, num_classes=cfg.num_classes, img_size=int(first.shape[-1]), classes=()
    )


def preflight(
    configs: Sequence[TrainConfig], check_data: bool = True, data: Optional[tuple[dict[str, Dataset], Any]] = None
) -> list[TrainConfig]:
    """Check a batch of runs (e.g. every model x seed of a comparison) before any of them trains; return them validated.

    For each config: its settings and device, that ``out`` is a writable folder, and that its model spec
    builds for the data's task, class count and image size and takes one image of that size. ``data``:
    (datasets, DataInfo) already built for these configs (``compare`` builds them once and shares them);
    otherwise each distinct dataset is built once here. With ``check_data`` every validation item is read.
    The first problem raises one FreqkitError, so a bad third model fails in seconds, not after the first two trained.
    """
    checked = []
    infos: dict[tuple[Any, ...], Any] = {}
    for config in configs:
        cfg = TrainConfig.from_dict(config.to_dict()).validate()
        check_writable_dir(cfg.out, "out")
        key = (cfg.data, cfg.task, cfg.img_size, cfg.num_classes, cfg.crop_size, cfg.scale)
        if key not in infos:
            datasets, infos[key] = data if data is not None else build_data(cfg)
            check = getattr(datasets["val"], "check", None)
            if check_data and check is not None:
                check(decode=True)
        info = infos[key]
        model = build_network(cfg, info.task, info.num_classes, info.img_size)
        check_input_size(model, info.img_size, cfg.model, torch.device("cpu"))
        del model
        checked.append(cfg)
    return checked


def data_identity(train_ds: Dataset, val_ds: Dataset) -> dict[str, Any]:
    """What the data is, beyond its spec string: a digest of each folder split's files (names and sizes) and its length."""
    from freqkit.data.folders import dataset_digest

    return {split: {"files": dataset_digest(ds), "items": len(ds)} for split, ds in (("train", train_ds), ("val", val_ds))}
