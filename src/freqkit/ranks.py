"""Failing together under torchrun: when one rank fails, every rank stops, with one line naming the rank and the cause.

Two tools, for two shapes of work:

- :func:`together` wraps a stretch of work that runs no collective (analyze's pass over its shard). At its end
  every rank exchanges its outcome (one ``all_gather_object``), so a rank that failed is named on every rank, and
  no rank enters the next collective while a peer is gone.
- :func:`publish_failure` / :func:`peer_failure` serve work full of collectives (DDP training): the failing rank
  writes its one line into the process group's key-value store and leaves without a barrier; a peer whose
  collective then breaks reads that line and names it instead of printing the backend's error.

:func:`shutdown` ends a process group without waiting on a peer that may be gone (no barrier after a failure).
"""

from __future__ import annotations

import datetime
import os
from contextlib import contextmanager
from typing import Iterator, Optional

from freqkit.errors import FreqkitError

__all__ = ["RankFailed", "rank_world", "dist_timeout", "together", "publish_failure", "peer_failure", "shutdown", "describe"]

_KEY = "freqkit/failure"


class RankFailed(FreqkitError):
    """Another rank failed; this one stops too. The message names the failing rank and its cause."""


def rank_world() -> tuple[int, int]:
    """(rank, world size) of the initialised torch.distributed group, else (0, 1)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def dist_timeout() -> datetime.timedelta:
    """How long a collective may wait for a peer (``FREQKIT_DIST_TIMEOUT`` seconds, default 1800) before it fails."""
    text = os.environ.get("FREQKIT_DIST_TIMEOUT", "1800")
    try:
        seconds = float(text)
    except ValueError:
        seconds = 0.0
    if not seconds > 0:
        raise FreqkitError(f"FREQKIT_DIST_TIMEOUT={text!r} is not a positive number of seconds; unset it or give e.g. 600")
    return datetime.timedelta(seconds=seconds)


def describe(err: BaseException) -> str:
    """The first line of an error: a FreqkitError's own text, anything else as 'Type: text'."""
    lines = [line for line in str(err).strip().splitlines() if line.strip()] or [""]
    if isinstance(err, FreqkitError):
        return lines[-1]  # a worker's traceback ends with the message
    text = lines[0]
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def _tagged(err: BaseException, rank: int) -> BaseException:
    """A FreqkitError of this rank with the rank in front; other errors unchanged (a bug keeps its traceback)."""
    if isinstance(err, FreqkitError) and not isinstance(err, RankFailed) and not str(err).startswith("rank "):
        tagged = type(err).__new__(type(err))
        tagged.__dict__.update(err.__dict__)
        tagged.args = (f"rank {rank}: {describe(err)}",)
        return tagged
    return err


@contextmanager
def together(what: str) -> Iterator[None]:
    """Run the block (no collectives inside); then every rank learns whether any rank failed, and all stop if one did."""
    rank, world = rank_world()
    if world == 1:
        yield
        return
    import torch.distributed as dist

    failure: Optional[BaseException] = None
    try:
        yield
    except BaseException as err:  # noqa: BLE001  (shared with the peers, then raised again below)
        failure = err
    outcomes: list[Optional[str]] = [None] * world
    dist.all_gather_object(outcomes, None if failure is None else describe(failure))
    if failure is not None:
        raise _tagged(failure, rank) from None
    failed = [(r, o) for r, o in enumerate(outcomes) if o is not None]
    if failed:
        r, cause = failed[0]
        raise RankFailed(f"rank {r} of {world} failed during {what}: {cause}; rank {rank} stopped too")


def publish_failure(err: BaseException) -> BaseException:
    """Write this rank's failure into the process group's store (best effort) and return the error to raise."""
    rank, world = rank_world()
    if world == 1 or isinstance(err, RankFailed):
        return err
    try:
        from torch.distributed import distributed_c10d

        store = distributed_c10d._get_default_store()
        store.set(_KEY, f"{rank}\0{describe(err)}")
    except Exception:  # noqa: BLE001  (the store may be gone with its host rank; the error still ends this rank)
        pass
    return _tagged(err, rank)


def peer_failure(err: BaseException, what: str, wait: float = 5.0) -> Optional[RankFailed]:
    """After a collective broke with ``err``: the failure a peer published, as a RankFailed to raise, else None."""
    rank, world = rank_world()
    if world == 1 or isinstance(err, FreqkitError):
        return None
    try:
        from torch.distributed import distributed_c10d

        store = distributed_c10d._get_default_store()
        store.set_timeout(datetime.timedelta(seconds=wait))
        store.wait([_KEY])
        r, cause = store.get(_KEY).decode().split("\0", 1)
    except Exception:  # noqa: BLE001  (nobody published: the collective's own error stands)
        return None
    if int(r) == rank:
        return None
    return RankFailed(f"rank {r} of {world} failed during {what}: {cause}; rank {rank} stopped too")


def shutdown(started: bool, failed: bool) -> None:
    """End a process group this process started: a barrier after success only, so a failure never waits on a peer."""
    import torch.distributed as dist

    if not (started and dist.is_available() and dist.is_initialized()):
        return
    try:
        if not failed:
            dist.barrier()
    finally:
        dist.destroy_process_group()
