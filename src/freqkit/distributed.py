"""Process-group setup shared by training and analysis: one process, or one of torchrun's.

Under ``torchrun`` (RANK / WORLD_SIZE / LOCAL_RANK in the environment) :func:`init_distributed` picks
this process's device (cuda:LOCAL_RANK on GPU) and starts a process group (NCCL on GPU, gloo on CPU);
:func:`cleanup_distributed` ends the group it started, after a failure without waiting on the peers (a
failed rank never blocks in a barrier: :mod:`freqkit.ranks`). :class:`TaskBoard` shares independent tasks
(a comparison's runs) out over torchrun's processes through its key-value store, with no process group, so
each task runs as a process of its own. Depends on torch, ``freqkit.errors`` and ``freqkit.ranks``.
"""

from __future__ import annotations

import os
import pickle
import time
from dataclasses import dataclass
from typing import Any, Iterator, Optional

import torch
import torch.distributed as dist

from freqkit.errors import ParameterError
from freqkit.ranks import dist_timeout, rank_world, shutdown

__all__ = [
    "DistInfo",
    "resolve_device",
    "init_distributed",
    "cleanup_distributed",
    "is_main",
    "rank_world",
    "torchrun_world",
    "TaskBoard",
]


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


def init_distributed(device: str = "auto", distributed: Optional[bool] = None) -> DistInfo:
    """Read torchrun's environment, pick the device and start the process group if WORLD_SIZE > 1.

    ``distributed=False``: this process works alone (no process group, rank 0 of 1) on its own device
    (cuda:LOCAL_RANK), as each run of a comparison spread over torchrun's processes does.
    """
    local = int(os.environ.get("LOCAL_RANK", "0"))
    rank, world, _ = (0, 1, 1) if distributed is False else torchrun_world()
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


def torchrun_world() -> tuple[int, int, int]:
    """(rank, world size, processes on this node) from torchrun's environment; (0, 1, 1) outside torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
    return int(os.environ.get("RANK", "0")), world, max(1, local_world)


class TaskBoard:
    """Tasks 0..n-1 claimed one at a time by whichever process is free; their outcomes posted for all to read.

    Built on torchrun's key-value store (``env://``: MASTER_ADDR / MASTER_PORT), with no process group, so a
    task may itself run alone (``distributed=False``) without joining a collective. Claims are first come, first
    served (an atomic counter), which balances tasks of unequal length. Waits poll the store instead of
    blocking in it, so a long task on one process never times out a peer. A failure is posted, not raised
    across ranks: :meth:`abort` stops further claims, and every process reads every outcome at the end.
    """

    def __init__(self, store: Any, rank: int, world: int, poll: float = 0.5) -> None:
        self.store, self.rank, self.world, self.poll = store, rank, world, poll

    @classmethod
    def join(cls, namespace: str) -> "TaskBoard":
        """Connect to torchrun's store (this process's rank and world size from the environment)."""
        from torch.distributed import PrefixStore, rendezvous

        rank, world, _ = torchrun_world()
        store, _, _ = next(rendezvous("env://", rank, world, timeout=dist_timeout()))
        # a restarted torchrun job shares the agent's store with its earlier attempt: keys of this attempt only
        attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
        return cls(PrefixStore(f"freqkit/{namespace}/{attempt}/", store), rank, world)

    def _has(self, key: str) -> bool:
        return bool(self.store.check([key]))

    def _wait_count(self, key: str, count: int) -> None:
        while self.store.add(key, 0) < count:
            time.sleep(self.poll)

    def post(self, key: str, value: Any) -> None:
        """Publish ``value`` (pickled) under ``key``."""
        self.store.set(key, pickle.dumps(value))

    def wait_posted(self, key: str) -> bool:
        """Wait (polling) until ``key`` is posted -> True, or until the board is aborted -> False."""
        while not self._has(key):
            if self.aborted() is not None:
                return False
            time.sleep(self.poll)
        return True

    def read(self, key: str) -> Any:
        """The value posted under ``key``, waiting for it (polling)."""
        while not self._has(key):
            time.sleep(self.poll)
        return pickle.loads(self.store.get(key))

    def abort(self, line: str) -> None:
        """Stop every process's claims (the first abort's line is kept)."""
        if self.store.add("aborts", 1) == 1:
            self.store.set("abort", line.encode())

    def aborted(self) -> Optional[str]:
        """The line of the first abort, or None."""
        if self.store.add("aborts", 0) == 0:
            return None
        while not self._has("abort"):  # the aborting rank has counted and is writing its line
            time.sleep(0.05)
        return self.store.get("abort").decode()

    def claim(self, count: int) -> Iterator[int]:
        """Task indices for this process, one at a time, until all ``count`` are taken or the board is aborted."""
        while self.aborted() is None:
            index = int(self.store.add("next", 1)) - 1
            if index >= count:
                return
            yield index

    def outcomes(self, count: int) -> dict[int, Any]:
        """Once every process stopped claiming (:meth:`idle`): the posted outcome of each task index that has one."""
        self._wait_count("idle", self.world)
        return {i: pickle.loads(self.store.get(f"task/{i}")) for i in range(count) if self._has(f"task/{i}")}

    def idle(self) -> None:
        """This process claims no more tasks."""
        self.store.add("idle", 1)

    def close(self) -> None:
        """Leave the board; rank 0 (which may host the store) waits until every process has read what it needs."""
        self.store.add("closed", 1)
        if self.rank == 0:
            self._wait_count("closed", self.world)
