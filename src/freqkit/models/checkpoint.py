"""Safe checkpoint reading and strict loading with a readable report of mismatched keys."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Callable, Mapping, Optional, Union

import torch
from torch import nn

from freqkit.errors import FreqkitError

__all__ = ["load_state_dict_file", "load_checkpoint", "LoadResult", "StateDictSource"]

StateDictSource = Union[str, os.PathLike, Mapping[str, torch.Tensor]]

# wrappers that training scripts put around the weights
_NESTED_KEYS = ("state_dict", "model", "model_ema", "module")


def load_state_dict_file(path: Union[str, os.PathLike]) -> dict[str, torch.Tensor]:
    """Read a state dict from a ``.safetensors`` file or a weights-only torch file (never unpickles code)."""
    p = Path(path)
    if not p.is_file():
        raise FreqkitError(f"checkpoint {str(p)!r} does not exist or is not a file; check the path")
    with open(p, "rb") as fh:
        head = fh.read(16)
    if p.suffix == ".safetensors" or (len(head) >= 9 and head[8:9] == b"{"):
        from safetensors.torch import load_file

        try:
            return dict(load_file(str(p), device="cpu"))
        except Exception as err:  # safetensors raises its own error types
            raise FreqkitError(
                f"checkpoint {str(p)!r} is not a readable safetensors file ({err}); re-save it with safetensors.torch.save_file"
            ) from None
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise FreqkitError(
            f"checkpoint {str(p)!r} is neither safetensors nor a weights-only torch file ({first}); "
            "convert it with safetensors.torch.save_file(state_dict, 'model.safetensors')"
        ) from None
    return _unwrap(obj, str(p))


def _unwrap(obj: object, where: str) -> dict[str, torch.Tensor]:
    for _ in range(3):
        if isinstance(obj, Mapping) and not all(isinstance(v, torch.Tensor) for v in obj.values()):
            inner = next((obj[k] for k in _NESTED_KEYS if k in obj and isinstance(obj[k], Mapping)), None)
            if inner is None:
                break
            obj = inner
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise FreqkitError(f"checkpoint {where!r} holds no state dict of tensors; save model.state_dict()")
    sd = dict(obj)
    if sd and all(k.startswith("module.") for k in sd):
        sd = {k[len("module.") :]: v for k, v in sd.items()}
    return sd


class LoadResult(tuple):
    """``(missing, unexpected)`` key lists (unpacks like before) that also carry ``mismatched``: keys dropped for their shape."""

    def __new__(cls, missing: list[str], unexpected: list[str], mismatched: list[str]) -> "LoadResult":
        obj = super().__new__(cls, (missing, unexpected))
        obj.missing, obj.unexpected, obj.mismatched = missing, unexpected, mismatched
        return obj


def load_checkpoint(
    model: nn.Module,
    source: StateDictSource,
    filter_fn: Optional[Callable[[dict[str, torch.Tensor], nn.Module], dict[str, torch.Tensor]]] = None,
    strict: bool = True,
    ignore: tuple[str, ...] = (),
) -> LoadResult:
    """Load ``source`` (path or state dict) into ``model`` after ``filter_fn``; returns (missing, unexpected) as a :class:`LoadResult`.

    With ``strict`` any missing or unexpected key, or a shape mismatch, raises one FreqkitError that
    lists them; with ``strict=False`` wrong-shaped tensors are dropped, listed in ``.mismatched`` and in
    a warning. Integer or bool tensors for floating-point parameters are refused either way (copying
    them would silently truncate nothing but mean nothing). Keys ending in any of ``ignore`` are
    dropped from the checkpoint first.
    """
    sd = load_state_dict_file(source) if isinstance(source, (str, os.PathLike)) else _unwrap(source, "state dict")
    if filter_fn is not None:
        sd = filter_fn(sd, model)
    if ignore:
        sd = {k: v for k, v in sd.items() if not k.endswith(ignore)}
    own = model.state_dict()
    missing = sorted(k for k in own if k not in sd)
    unexpected = sorted(k for k in sd if k not in own)
    shapes = sorted(
        f"{k}: checkpoint {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}"
        for k in sd
        if k in own and sd[k].shape != own[k].shape
    )
    dtypes = sorted(
        f"{k}: {str(sd[k].dtype).replace('torch.', '')} for {str(own[k].dtype).replace('torch.', '')}"
        for k in sd
        if k in own and own[k].is_floating_point() and not (sd[k].is_floating_point() or sd[k].is_complex())
    )
    if dtypes:
        raise FreqkitError(
            f"checkpoint stores integer tensors for floating-point weights of {type(model).__name__} ({len(dtypes)}: {_short(dtypes)}); "
            "it is not a weights file of this model (or was quantized): convert it to float first"
        )
    if strict and (missing or unexpected or shapes):
        parts = []
        if missing:
            parts.append(f"missing keys ({len(missing)}): {_short(missing)}")
        if unexpected:
            parts.append(f"unexpected keys ({len(unexpected)}): {_short(unexpected)}")
        if shapes:
            parts.append(f"shape mismatches ({len(shapes)}): {_short(shapes)}")
        raise FreqkitError(
            f"checkpoint does not match {type(model).__name__}: "
            + "; ".join(parts)
            + "; check the model name and its arguments, or load with strict=False"
        )
    mismatched = sorted(k for k in sd if k in own and sd[k].shape != own[k].shape)
    if mismatched:
        warnings.warn(
            f"load_checkpoint(strict=False) dropped {len(mismatched)} wrong-shaped tensor(s), the model keeps its own: {_short(shapes)}",
            stacklevel=2,
        )
    sd = {k: v for k, v in sd.items() if k in own and v.shape == own[k].shape}
    model.load_state_dict(sd, strict=False)
    return LoadResult(missing, unexpected, mismatched)


def _short(items: list[str], limit: int = 12) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f", ... ({len(items) - limit} more)" if len(items) > limit else "")
