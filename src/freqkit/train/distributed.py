"""Single process or torchrun DistributedDataParallel: process-group setup and a resumable sampler.

Under ``torchrun`` (RANK / WORLD_SIZE / LOCAL_RANK in the environment) :func:`init_distributed`
starts a process group (NCCL on GPU, gloo on CPU). The global batch of step ``k`` is the same set
of samples for any number of processes: :class:`ResumableDistributedSampler` is torch's
``DistributedSampler`` (same permutation of the dataset per epoch, rank r takes positions
r, r + world, ...), so with per-process batch b, step k of every rank covers positions
[k b world, (k + 1) b world) of the permutation, exactly the batch of one process with batch b world.
It can also start an epoch part-way (``set_epoch(epoch, start_batch)``) for exact resume.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterator, Optional

import torch
import torch.distributed as dist
from torch.utils.data import Dataset, DistributedSampler

from freqkit.errors import ParameterError

__all__ = ["DistInfo", "resolve_device", "init_distributed", "cleanup_distributed", "ResumableDistributedSampler", "is_main"]


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
            raise ParameterError("device", f"{device!r} is not a device; use 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ParameterError("device", f"{str(device)!r} but CUDA is not available on this machine; use 'cpu' or 'auto'")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ParameterError("device", f"{str(device)!r} but this machine has {torch.cuda.device_count()} CUDA device(s) (0..{torch.cuda.device_count() - 1})"
            )
    elif dev.type == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise ParameterError("device", f"{str(device)!r} but MPS is not available on this machine; use 'cpu' or 'auto'")
    elif dev.type != "cpu":
        raise ParameterError("device", f"{str(device)!r} is not supported for training; use 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'")
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
        from freqkit.ranks import dist_timeout

        dist.init_process_group(backend=backend, rank=rank, world_size=world, device_id=dev if dev.type == "cuda" else None,
                                timeout=dist_timeout())
        info.initialized_here = True
    return info


def cleanup_distributed(info: DistInfo, failed: bool = False) -> None:
    """Destroy the process group if :func:`init_distributed` created it; after a failure without waiting on the peers."""
    from freqkit.ranks import shutdown

    shutdown(info.initialized_here, failed)


class ResumableDistributedSampler(DistributedSampler):
    """``DistributedSampler`` that can start an epoch at batch ``start_batch`` (per-process batches of ``batch_size``)."""

    def __init__(self, dataset: Dataset, batch_size: int, num_replicas: int = 1, rank: int = 0, shuffle: bool = True, seed: int = 0) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed, drop_last=True)
        self.batch_size = int(batch_size)
        self.start_batch = 0

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Use the permutation of ``epoch`` and skip its first ``start_batch`` batches."""
        super().set_epoch(epoch)
        self.start_batch = int(start_batch)

    @property
    def batches_per_epoch(self) -> int:
        """Full per-process batches in one epoch (incomplete last batches are dropped)."""
        return self.num_samples // self.batch_size

    def __iter__(self) -> Iterator[int]:
        indices = list(super().__iter__())
        usable = self.batches_per_epoch * self.batch_size
        return iter(indices[self.start_batch * self.batch_size : usable])

    def __len__(self) -> int:
        return (self.batches_per_epoch - self.start_batch) * self.batch_size
