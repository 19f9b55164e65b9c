"""Private helpers shared by the spectral functions: input checks and the compute/output dtypes."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import torch

from freqkit.errors import FreqkitError

T = TypeVar("T")
R = TypeVar("R")

_HALF = (torch.float16, torch.bfloat16)


def compute_dtype(x: torch.Tensor) -> torch.dtype:
    """Dtype the math runs in: float32 for half types (FFT/SVD need it), the default float for ints."""
    if x.dtype in _HALF:
        return torch.float32
    if not x.is_floating_point():
        if x.is_complex():
            raise FreqkitError(f"expected a real tensor, got {x.dtype}; pass x.real or x.abs() instead")
        return torch.get_default_dtype()
    return x.dtype


def output_dtype(x: torch.Tensor) -> torch.dtype:
    """Dtype results come back in: the input's if it is floating point, else the compute dtype."""
    return x.dtype if x.is_floating_point() else compute_dtype(x)


def to_compute(x: torch.Tensor) -> torch.Tensor:
    """x converted to its compute dtype (no copy when it already is)."""
    return x.to(compute_dtype(x))


def to_output(result: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """result cast back to the output dtype of `like`, clamped so half types never overflow to inf."""
    dtype = output_dtype(like)
    if dtype in _HALF and result.dtype != dtype:
        big = torch.finfo(dtype).max
        result = result.clamp(-big, big)
    return result.to(dtype)


def check_ndim(x: torch.Tensor, ndims: tuple[int, ...], name: str, layout: str) -> None:
    """Raise a FreqkitError unless x.ndim is one of `ndims`."""
    if not isinstance(x, torch.Tensor):
        raise FreqkitError(f"{name} must be a torch.Tensor of shape {layout}, got {type(x).__name__}")
    if x.ndim not in ndims:
        raise FreqkitError(f"{name} must have shape {layout}, got shape {tuple(x.shape)}; reshape it to {layout}")


def check_grid(grid_size: tuple[int, int]) -> tuple[int, int]:
    """grid_size validated as two positive ints."""
    try:
        h, w = (int(g) for g in grid_size)
    except (TypeError, ValueError):
        raise FreqkitError(f"grid_size must be a pair (H, W) of positive ints, got {grid_size!r}") from None
    if h <= 0 or w <= 0:
        raise FreqkitError(f"grid_size must be positive, got {(h, w)}; pass the token grid (H, W)")
    return h, w


def map_threads(fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
    """``[fn(item) for item in items]``, spread over torch's CPU threads with each call at 1 intra-op thread.

    Small CPU tensors leave torch's intra-op threads (and MKL's, which spin) mostly idle; running
    independent calls side by side, each at 1 thread, keeps every core busy and gives every call the
    values of a 1-thread run. The thread count is process-wide, so it is restored afterwards. One
    item, or 1 thread, runs in order in the calling thread.
    """
    threads = torch.get_num_threads()
    if threads <= 1 or len(items) < 2:
        return [fn(item) for item in items]
    torch.set_num_threads(1)
    try:
        with ThreadPoolExecutor(max_workers=min(threads, len(items))) as pool:
            return list(pool.map(fn, items))
    finally:
        torch.set_num_threads(threads)
