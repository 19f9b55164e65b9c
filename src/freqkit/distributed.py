"""Process-group setup shared by training and analysis: one process, or one of torchrun's.

Under ``torchrun`` (RANK / WORLD_SIZE / LOCAL_RANK in the environment) :func:`init_distributed` picks
this process's device (cuda:LOCAL_RANK on GPU) and starts a process group (NCCL on GPU, gloo on CPU);
:func:`cleanup_distributed` ends the group it started, after a failure without waiting on the peers (a
failed rank never blocks in a barrier: :mod:`freqkit.ranks`). Depends on torch, ``freqkit.errors`` and ``freqkit.ranks``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional

import torch
import torch.distributed as dist

from freqkit.errors import ParameterError
from freqkit.ranks import dist_timeout, rank_world, shutdown

__all__ = ["DistInfo", "resolve_device", "init_distributed", "cleanup_distributed", "is_main", "rank_world"]


@dataclass
class DistInfo:
    """This process's place in the job: rank, world size, local rank, device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    initialized_here: bool = False

    @property
    def distributed(self) -> bool:
        """True when more than one process trains."""
        return self.world_size > 1


def is_main(info: Optional[DistInfo]) -> bool:
    """True on rank 0 (or without distribution)."""
    return info is None or info.rank == 0


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """'auto' / 'cpu' / 'cuda' / 'cuda:N' / 'mps' -> a usable torch.device; anything else one FreqkitError naming ``device``."""
    if isinstance(device, torch.device):
        dev = device
    else:
        text = str(device).strip()
        if text == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        try:
            dev = torch.device(text)
        except (RuntimeError, ValueError):
            raise ParameterError("device", f"{device!r} is not a device; use device=auto, cpu, cuda, cuda:N or mps") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ParameterError(
                "device", f"{str(device)!r} but CUDA is not available on this machine; use device=cpu or device=auto"
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ParameterError(
                "device",
                f"{str(device)!r} but this machine has {torch.cuda.device_count()} CUDA device(s) (0..{torch.cuda.device_count() - 1})",
            )
    elif dev.type == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise ParameterError(
                "device", f"{str(device)!r} but MPS is not available on this machine; use device=cpu or device=auto"
            )
    elif dev.type != "cpu":
        raise ParameterError(
            "device", f"{str(device)!r} is not supported for training; use device=auto, cpu, cuda, cuda:N or mps"
        )
    return dev


def init_distributed(device: str = "auto") -> DistInfo:
    """Read torchrun's environment, pick the device and start the process group if WORLD_SIZE > 1."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device)
    if dev.type == "cuda":
        index = local if dev.index is None else dev.index
        dev = torch.device("cuda", index)
        torch.cuda.set_device(dev)
    info = DistInfo(rank=rank, world_size=world, local_rank=local, device=dev)
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        dist.init_process_group(
            backend=backend, rank=rank, world_size=world, device_id=dev if dev.type == "cuda" else None, timeout=dist_timeout()
        )
        info.initialized_here = True
    return info


def cleanup_distributed(info: DistInfo, failed: bool = False) -> None:
    """Destroy the process group if :func:`init_distributed` created it; after a failure without waiting on the peers."""
    shutdown(info.initialized_here, failed)
