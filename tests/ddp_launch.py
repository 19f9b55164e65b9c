"""Launching ``python -m freqkit`` under torchrun in tests: two gloo processes on this machine, one thread each."""

from __future__ import annotations

import os
import socket
import sys

__all__ = ["free_port", "freqkit_torchrun", "torchrun_env"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (the rendezvous of one torchrun job)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def freqkit_torchrun(nproc: int = 2) -> list[str]:
    """The command prefix ``python -m torch.distributed.run ... -m freqkit``; append the subcommand and its flags."""
    return [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", str(nproc),
            "--master_addr", "127.0.0.1", "--master_port", str(free_port()), "-m", "freqkit"]  # fmt: skip


def torchrun_env(**extra: str) -> dict[str, str]:
    """This environment with one thread per process and gloo on the loopback interface (plus ``extra``)."""
    return dict(os.environ, OMP_NUM_THREADS="1", GLOO_SOCKET_IFNAME="lo", **extra)
