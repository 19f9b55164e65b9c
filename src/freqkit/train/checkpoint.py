"""Training checkpoints: safetensors for every tensor, JSON for everything else.

A checkpoint is a folder::

    model.safetensors      the model's state_dict (unwrapped from DDP)
    optimizer.safetensors  optimizer state tensors as ``state.<param index>.<name>``, and RNG states as ``rng.*``
    state.json             step, config, optimizer hyper-parameters, Python / NumPy RNG states, metrics

It is written to ``<dir>.tmp`` and renamed into place, so an interrupted save leaves the previous
checkpoint intact. Loading uses safetensors only (no pickle), so untrusted checkpoints are safe.
"""
from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from torch import nn

from freqkit.errors import FreqkitError

__all__ = ["save_train_state", "load_train_state", "save_model_file", "rng_state", "set_rng_state", "unwrap"]


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside DistributedDataParallel / torch.compile wrappers."""
    while True:
        inner = getattr(model, "module", None) or getattr(model, "_orig_mod", None)
        if inner is None:
            return model
        model = inner


def _cpu_state(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in sd.items()}


def save_model_file(model: nn.Module, path: str | Path, metadata: Optional[dict[str, str]] = None) -> None:
    """Write the (unwrapped) model's state_dict to a safetensors file."""
    from safetensors.torch import save_file

    save_file(_cpu_state(unwrap(model).state_dict()), str(path), metadata=metadata)


def rng_state() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(tensors, JSON-ready values) capturing torch (CPU, CUDA), Python and NumPy RNGs."""
    tensors = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = s
    py = random.getstate()
    np_state = np.random.get_state()
    values = {
        "python": [py[0], list(py[1]), py[2]],
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
    }
    return tensors, values


def set_rng_state(tensors: dict[str, torch.Tensor], values: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` captured."""
    torch.set_rng_state(tensors["rng.torch"].to(torch.uint8))
    cuda = sorted((k for k in tensors if k.startswith("rng.cuda.")), key=lambda k: int(k.rsplit(".", 1)[1]))
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([tensors[k].to(torch.uint8) for k in cuda])
    if "python" in values:
        v = values["python"]
        random.setstate((v[0], tuple(v[1]), v[2]))
    if "numpy" in values:
        v = values["numpy"]
        np.random.set_state((v[0], np.array(v[1], dtype=np.uint32), v[2], v[3], v[4]))


def _optimizer_payload(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    sd = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, st in sd["state"].items():
        for key, value in st.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state.{idx}.{key}"] = value.detach().to("cpu").contiguous().clone()
            else:
                scalars.setdefault(str(idx), {})[key] = value
    groups = [{k: v for k, v in g.items()} for g in sd["param_groups"]]
    return tensors, {"param_groups": groups, "scalars": scalars}


def save_train_state(
    folder: str | Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    step: int,
    config: dict[str, Any],
    extra: Optional[dict[str, Any]] = None,
) -> Path:
    """Write model, optimizer, RNG states and ``step`` to ``folder`` atomically; return the folder."""
    from safetensors.torch import save_file

    folder = Path(folder)
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_model_file(model, tmp / "model.safetensors")
    opt_tensors, opt_json = _optimizer_payload(optimizer)
    rng_tensors, rng_json = rng_state()
    save_file({**opt_tensors, **rng_tensors}, str(tmp / "optimizer.safetensors"))
    state = {"step": int(step), "config": config, "optimizer": opt_json, "rng": rng_json, "extra": extra or {}}
    (tmp / "state.json").write_text(json.dumps(state, indent=1))
    old = folder.with_name(folder.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if folder.exists():
        os.replace(folder, old)
    os.replace(tmp, folder)
    shutil.rmtree(old, ignore_errors=True)
    return folder


def load_train_state(
    folder: str | Path, model: nn.Module, optimizer: Optional[torch.optim.Optimizer] = None, restore_rng: bool = True
) -> dict[str, Any]:
    """Load a :func:`save_train_state` folder into ``model`` (and ``optimizer``, RNGs); return the JSON state."""
    from safetensors.torch import load_file

    from freqkit.models.checkpoint import load_checkpoint

    folder = Path(folder)
    needed = [folder / n for n in ("model.safetensors", "optimizer.safetensors", "state.json")]
    missing = [p.name for p in needed if not p.is_file()]
    if missing:
        raise FreqkitError(f"checkpoint folder {folder} lacks {', '.join(missing)}; point --resume at a folder written by freqkit train")
    try:
        state = json.loads((folder / "state.json").read_text())
    except json.JSONDecodeError as err:
        raise FreqkitError(f"{folder / 'state.json'} is not valid JSON ({err}); the checkpoint is damaged") from None
    load_checkpoint(unwrap(model), str(folder / "model.safetensors"))
    tensors = load_file(str(folder / "optimizer.safetensors"))
    if optimizer is not None:
        opt = state["optimizer"]
        per_param: dict[int, dict[str, Any]] = {}
        for key, value in tensors.items():
            if key.startswith("state."):
                _, idx, name = key.split(".", 2)
                per_param.setdefault(int(idx), {})[name] = value
        for idx, values in opt["scalars"].items():
            per_param.setdefault(int(idx), {}).update(values)
        current = optimizer.state_dict()["param_groups"]
        if len(current) != len(opt["param_groups"]) or any(
            len(a["params"]) != len(b["params"]) for a, b in zip(current, opt["param_groups"])
        ):
            raise FreqkitError(f"optimizer in {folder} has different parameter groups than this model; resume with the same model and settings")
        optimizer.load_state_dict({"state": per_param, "param_groups": opt["param_groups"]})
    if restore_rng:
        set_rng_state({k: v for k, v in tensors.items() if k.startswith("rng.")}, state.get("rng", {}))
    return state
