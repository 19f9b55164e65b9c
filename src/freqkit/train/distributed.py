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

from typing import Iterator

from torch.utils.data import Dataset, DistributedSampler

# the process-group setup is shared with analysis; the sampler is training's own
from freqkit.distributed import DistInfo, cleanup_distributed, init_distributed, is_main, resolve_device

__all__ = ["DistInfo", "resolve_device", "init_distributed", "cleanup_distributed", "ResumableDistributedSampler", "is_main"]


class ResumableDistributedSampler(DistributedSampler):
    """``DistributedSampler`` that can start an epoch at batch ``start_batch`` (per-process batches of ``batch_size``)."""

    def __init__(
        self, dataset: Dataset, batch_size: int, num_replicas: int = 1, rank: int = 0, shuffle: bool = True, seed: int = 0
    ) -> None:
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
