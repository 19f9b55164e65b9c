"""glibc's malloc under a long ``analyze`` stream: fixed thresholds keep the peak memory flat at no cost in speed.

glibc returns the free top of its heap to the system once it exceeds the trim threshold, and it
moves both of its thresholds at run time: each freed mmapped block raises the mmap threshold (up to
32 MiB) and sets the trim threshold to twice that. Under ``analyze`` (a forward, then a few MB of
statistics temporaries per layer, batch after batch) the heap therefore shrinks and grows again at
random points of each batch, and the peak resident memory creeps up: deit_tiny, batch 16, +8 to
+14 % from 24 to 768 images, in jumps at batches that differ from run to run. Fixing the mmap
threshold at glibc's largest value (32 MiB, so the per-batch blocks come from the heap, where they
are reused, not from fresh mappings that fault in page by page) and the trim threshold far above
any batch's needs (the heap keeps its pages for the next batch) holds it within about 6 % from 24
to 1536 images (flat after 768), and the stream gets faster, not slower (fewer page faults). The
price is that the process keeps the memory of its largest batch until it exits. The settings are
process-wide and cannot be undone, so the library never makes them: the ``freqkit analyze`` command
calls :func:`fix_malloc_thresholds` for its own process, and a Python user streaming a large folder
can call it too, or start Python with ``MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=1073741824``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

__all__ = ["MMAP_THRESHOLD", "TRIM_THRESHOLD", "fix_malloc_thresholds"]

MMAP_THRESHOLD = 32 * 1024 * 1024  # glibc's DEFAULT_MMAP_THRESHOLD_MAX on 64-bit
TRIM_THRESHOLD = 1024 * 1024 * 1024  # far above one batch's temporaries: the heap keeps them
_M_TRIM_THRESHOLD = -1  # from <malloc.h>
_M_MMAP_THRESHOLD = -3


def fix_malloc_thresholds(mmap_threshold: int = MMAP_THRESHOLD, trim_threshold: int = TRIM_THRESHOLD) -> bool:
    """Fix glibc's mmap and trim thresholds (bytes; Linux with glibc, elsewhere nothing) -> whether both were set."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and other libcs without mallopt
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    ok = bool(mallopt(_M_MMAP_THRESHOLD, int(mmap_threshold)))
    return bool(mallopt(_M_TRIM_THRESHOLD, int(trim_threshold))) and ok
