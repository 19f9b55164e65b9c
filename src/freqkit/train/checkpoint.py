"""Training checkpoints: safetensors for every tensor, JSON for everything else.

A checkpoint is a folder::

    model.safetensors      the model's state_dict (unwrapped from DDP)
    optimizer.safetensors  optimizer state tensors as ``state.<param index>.<name>``, and RNG states as ``rng.*``
    state.json             step, config, optimizer hyper-parameters, Python / NumPy RNG states, metrics

A save writes every file of ``<dir>.tmp`` atomically, ``state.json`` last with the SHA-256 and size of
the two tensor files, then moves ``<dir>`` to ``<dir>.old`` and ``<dir>.tmp`` to ``<dir>``, and removes
``<dir>.old``. A checkpoint is *complete* when its ``state.json`` parses and both hashes match. A
kill at any instant leaves at least one complete checkpoint among ``<dir>``, ``<dir>.tmp`` and
``<dir>.old`` (once the first save has finished); :func:`find_checkpoint` picks the newest one and
:func:`settle_checkpoint` moves it back to ``<dir>``. Nothing is deleted unless a newer complete
checkpoint exists. Loading uses safetensors only (no pickle), so untrusted checkpoints are safe.
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from torch import nn

from freqkit.errors import FreqkitError
from freqkit.io import atomic_write_bytes, atomic_write_json, fault_point, fsync_dir
from freqkit.limits import loads_json

__all__ = [
    "CheckpointDamaged",
    "find_checkpoint",
    "load_train_state",
    "rng_state",
    "save_model_file",
    "save_train_state",
    "set_rng_state",
    "settle_checkpoint",
    "unwrap",
]

TENSOR_FILES = ("model.safetensors", "optimizer.safetensors")


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside DistributedDataParallel / torch.compile / EMA wrappers (timm's ``unwrap_model``)."""
    from timm.utils import unwrap_model

    return unwrap_model(model)


def _cpu_state(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in sd.items()}


def _model_bytes(model: nn.Module, metadata: Optional[dict[str, str]] = None) -> bytes:
    from safetensors.torch import save

    return save(_cpu_state(unwrap(model).state_dict()), metadata=metadata)


def save_model_file(model: nn.Module, path: str | Path, metadata: Optional[dict[str, str]] = None) -> None:
    """Write the (unwrapped) model's state_dict to a safetensors file, atomically."""
    atomic_write_bytes(path, _model_bytes(model, metadata))


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


class CheckpointDamaged(FreqkitError):
    """Checkpoint files exist but none of them is a complete checkpoint."""


def _digest(data: bytes) -> dict[str, Any]:
    return {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}


def _candidates(folder: Path) -> list[Path]:
    # on equal steps the first wins: the settled folder, then the newer .tmp, then .old
    return [folder, folder.with_name(folder.name + ".tmp"), folder.with_name(folder.name + ".old")]


def _inspect(folder: Path) -> tuple[Optional[dict[str, Any]], str]:
    """(state, "") for a complete checkpoint folder, else (None, why it is not)."""
    missing = [n for n in (*TENSOR_FILES, "state.json") if not (folder / n).is_file()]
    if missing:
        return None, f"{folder.name}/ lacks {', '.join(missing)}"
    try:
        state = loads_json((folder / "state.json").read_text(), f"{folder.name}/state.json")
        step = int(state["step"])
        state["config"], state["optimizer"]  # noqa: B018  (present in every complete state)
    except (OSError, ValueError, KeyError, TypeError) as err:
        return None, f"{folder.name}/state.json is damaged ({type(err).__name__}: {err})"
    if step < 0:
        return None, f"{folder.name}/state.json has step {step}"
    files = state.get("files")
    for name in TENSOR_FILES:
        path = folder / name
        if isinstance(files, dict) and name in files:
            data = path.read_bytes()
            if _digest(data) != files[name]:
                return None, f"{folder.name}/{name} is damaged (size or SHA-256 differs from state.json)"
        else:  # written before hashes were recorded: the safetensors header must at least describe the file
            from safetensors import safe_open

            try:
                with safe_open(str(path), "pt") as fh:
                    fh.keys()
            except Exception as err:  # safetensors raises its own error types
                return None, f"{folder.name}/{name} is damaged ({err})"
    return state, ""


def find_checkpoint(folder: str | Path) -> Optional[tuple[Path, dict[str, Any]]]:
    """(path, state) of the newest complete checkpoint among ``folder``, ``folder.tmp``, ``folder.old``; None if none exists.

    Raises :class:`CheckpointDamaged` when ``folder`` or ``folder.old`` exists but nothing complete does
    (a half-written ``folder.tmp`` alone is an interrupted first save: None).
    """
    folder = Path(folder)
    best: Optional[tuple[Path, dict[str, Any]]] = None
    reasons = []
    for path in _candidates(folder):
        if not path.exists():
            continue
        state, why = _inspect(path)
        if state is None:
            reasons.append(why)
        elif best is None or int(state["step"]) > int(best[1]["step"]):
            best = (path, state)
    if best is None and (folder.exists() or _candidates(folder)[2].exists()):
        raise CheckpointDamaged(
            f"no complete checkpoint in {folder} ({'; '.join(reasons)}); "
            "resuming would restart from step 0: move the folder away (or set resume=False) to start afresh"
        )
    return best


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink()


def settle_checkpoint(folder: str | Path) -> Optional[int]:
    """Move the newest complete checkpoint to ``folder`` and remove the other copies; return its step (None: none).

    Called before every save: without any complete copy, the damaged ones are removed (the save replaces them).
    """
    folder = Path(folder)
    cur, tmp, old = _candidates(folder)
    try:
        found = find_checkpoint(folder)
    except CheckpointDamaged:
        found = None
    if found is None:
        for p in (tmp, old, cur):
            _remove(p)
        return None
    best, state = found
    if best != cur:
        # the best copy is never touched until it has its final name
        for p in (cur, tmp, old):
            if p != best:
                _remove(p)
        os.replace(best, cur)
        fsync_dir(folder.parent)
    else:
        _remove(tmp)
        _remove(old)
    return int(state["step"])


def save_train_state(
    folder: str | Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    step: int,
    config: dict[str, Any],
    extra: Optional[dict[str, Any]] = None,
) -> Path:
    """Write model, optimizer, RNG states and ``step`` to ``folder`` so that a kill at any point loses nothing; return it.

    ``FREQKIT_FAULT_AT`` points (tests): ``ckpt:start``, ``ckpt:model``, ``ckpt:optimizer``, ``ckpt:state``,
    ``ckpt:old_moved``, ``ckpt:new_moved``, ``ckpt:done`` and ``before_replace:<dir>.tmp/<file>``.
    """
    from safetensors.torch import save

    folder = Path(folder)
    cur, tmp, old = _candidates(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    settle_checkpoint(folder)
    tmp.mkdir()
    fault_point("ckpt:start")
    model_bytes = _model_bytes(model)
    atomic_write_bytes(tmp / "model.safetensors", model_bytes)
    fault_point("ckpt:model")
    opt_tensors, opt_json = _optimizer_payload(optimizer)
    rng_tensors, rng_json = rng_state()
    opt_bytes = save({**opt_tensors, **rng_tensors})
    atomic_write_bytes(tmp / "optimizer.safetensors", opt_bytes)
    fault_point("ckpt:optimizer")
    state = {
        "step": int(step),
        "config": config,
        "optimizer": opt_json,
        "rng": rng_json,
        "extra": extra or {},
        "files": {"model.safetensors": _digest(model_bytes), "optimizer.safetensors": _digest(opt_bytes)},
    }
    atomic_write_json(tmp / "state.json", state)
    fsync_dir(tmp)
    fault_point("ckpt:state")
    if cur.exists():
        os.replace(cur, old)
        fsync_dir(folder.parent)
        fault_point("ckpt:old_moved")
    os.replace(tmp, cur)
    fsync_dir(folder.parent)
    fault_point("ckpt:new_moved")
    _remove(old)
    fault_point("ckpt:done")
    return folder


def load_train_state(
    folder: str | Path, model: nn.Module, optimizer: Optional[torch.optim.Optimizer] = None, restore_rng: bool = True
) -> dict[str, Any]:
    """Load the newest complete checkpoint of ``folder`` into ``model`` (and ``optimizer``, RNGs); return its JSON state.

    Damaged or missing files raise one FreqkitError naming the file.
    """
    from safetensors.torch import load_file

    from freqkit.models.checkpoint import load_checkpoint

    folder = Path(folder)
    needed = [folder / n for n in ("model.safetensors", "optimizer.safetensors", "state.json")]
    if any(not p.is_file() for p in needed) and not any(c.exists() for c in _candidates(folder)[1:]):
        missing = [p.name for p in needed if not p.is_file()]
        raise FreqkitError(f"checkpoint folder {folder} lacks {', '.join(missing)}; point at a folder written by freqkit train")
    found = find_checkpoint(folder)
    if found is None:
        raise CheckpointDamaged(f"no complete checkpoint in {folder}; point at a folder written by freqkit train")
    path, state = found
    try:
        load_checkpoint(unwrap(model), str(path / "model.safetensors"))
        tensors = load_file(str(path / "optimizer.safetensors"))
    except FreqkitError:
        raise
    except Exception as err:  # safetensors raises its own error types
        raise CheckpointDamaged(f"checkpoint {path} cannot be read ({err}); it is damaged") from None
    if optimizer is not None:
        opt = state["optimizer"]
        per_param: dict[int, dict[str, Any]] = {}
        try:
            for key, value in tensors.items():
                if key.startswith("state."):
                    _, idx, name = key.split(".", 2)
                    per_param.setdefault(int(idx), {})[name] = value
            for idx, values in opt["scalars"].items():
                per_param.setdefault(int(idx), {}).update(values)
            groups = opt["param_groups"]
        except (KeyError, ValueError, TypeError, AttributeError) as err:
            raise CheckpointDamaged(f"optimizer state in {path} is damaged ({type(err).__name__}: {err})") from None
        current = optimizer.state_dict()["param_groups"]
        if len(current) != len(groups) or any(len(a["params"]) != len(b["params"]) for a, b in zip(current, groups)):
            raise FreqkitError(
                f"optimizer in {path} has different parameter groups than this model; resume with the same model and settings"
            )
        optimizer.load_state_dict({"state": per_param, "param_groups": groups})
    if restore_rng:
        if "rng.torch" not in tensors:
            raise CheckpointDamaged(f"{path / 'optimizer.safetensors'} lacks the RNG state; the checkpoint is damaged")
        set_rng_state({k: v for k, v in tensors.items() if k.startswith("rng.")}, state.get("rng", {}))
    return state
