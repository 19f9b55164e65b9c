"""freqkit.analysis.malloc: the fixed thresholds serve a batch's blocks from the heap and keep them for the next batch."""

from __future__ import annotations

import subprocess
import sys

import pytest

from freqkit.analysis import malloc

# a child process: the settings are process-wide, so the test process keeps glibc's defaults
_CHILD = r"""
import ctypes, sys
from freqkit.analysis.malloc import fix_malloc_thresholds

class Info(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = Info
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
if sys.argv[1] == "fix":
    assert fix_malloc_thresholds()
mapped = libc.mallinfo2().hblks
blocks = [libc.malloc(8 << 20) for _ in range(8)]  # eight 8 MiB blocks: above glibc's starting mmap threshold
for p in blocks:
    ctypes.memset(p, 1, 8 << 20)
during = libc.mallinfo2().hblks - mapped
for p in reversed(blocks):
    libc.free(p)
print(during, libc.mallinfo2().arena >> 20)
"""


def _child(mode: str) -> tuple[int, int]:
    out = subprocess.run([sys.executable, "-c", _CHILD, mode], capture_output=True, text=True, check=True).stdout.split()
    return int(out[0]), int(out[1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_fixed_thresholds_keep_large_blocks_in_the_heap():
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").mallinfo2  # noqa: B018  (glibc 2.33 or newer)
    except (OSError, AttributeError):
        pytest.skip("no glibc mallinfo2 here")
    mapped, kept = _child("default")
    assert mapped == 8  # glibc's default: each block is its own mapping, unmapped (its pages faulted again) on free
    mapped, kept = _child("fix")
    assert mapped == 0  # fixed: from the heap ...
    assert kept >= 64  # ... which keeps the 64 MiB after the free, for the next batch to reuse


def test_elsewhere_nothing_is_set(monkeypatch):
    monkeypatch.setattr(malloc.sys, "platform", "darwin")
    assert malloc.fix_malloc_thresholds() is False
