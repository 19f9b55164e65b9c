"""glibc's malloc under a long ``analyze`` stream: a fixed mmap threshold keeps the peak memory flat.

glibc serves an allocation above its mmap threshold (128 KiB at start) with its own mmap, returned
to the system on free, but every such free raises the threshold to the freed size (up to 32 MiB).
After the first batch the per-batch temporaries of ``analyze`` (token stacks, FFT amplitudes: a few
to 30 MB each) therefore come from the heap, where their varying sizes fragment it, and the peak
resident memory creeps up batch after batch (deit_tiny, batch 16: +16 % from 24 to 768 images).
Setting the threshold (mallopt M_MMAP_THRESHOLD) turns the raise off: large temporaries stay
mmapped and the peak stays flat (+1 %). The price: every large temporary is a fresh mapping whose
pages fault in, which slows a plain deit_tiny forward by about 30 % on CPU in that process. The
setting is process-wide and cannot be undone, so the library never makes it: the ``freqkit analyze``
command calls :func:`fix_mmap_threshold` for its own process, and a Python user streaming a large
folder can call it too (or start Python with ``MALLOC_MMAP_THRESHOLD_=131072``).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

__all__ = ["MMAP_THRESHOLD", "fix_mmap_threshold"]

MMAP_THRESHOLD = 128 * 1024  # glibc's default starting value (DEFAULT_MMAP_THRESHOLD_MIN)
_M_MMAP_THRESHOLD = -3  # from <malloc.h>


def fix_mmap_threshold(nbytes: int = MMAP_THRESHOLD) -> bool:
    """Fix glibc's mmap threshold at ``nbytes`` (Linux with glibc; elsewhere nothing) -> whether it was set."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and other libcs without mallopt
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, int(nbytes)))
