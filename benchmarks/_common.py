"""Shared pieces of the benchmarks: machine description, clocks, interleaved timing, JSON output.

Every benchmark writes, with ``--json PATH``, one object of this schema (``SCHEMA_VERSION`` 1)::

    {"schema": 1, "benchmark": "fdam", "created": "2026-12-02T03:10:00Z",
     "command": "python -m benchmarks.fdam --quick ...",
     "machine": {see machine()}, "settings": {the parsed arguments},
     "results": [{...one row per measured model / setting...}],
     "ratios": {"<name>": {"value": 1.07, "aim": 1.10, "kind": "max"|"min"|null, "met": true|false|null}}}

so results can be compared across commits and machines (``git rev-parse HEAD`` is in
``machine.commit`` when the benchmark runs inside a git checkout).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, Sequence

import torch

SCHEMA_VERSION = 1


def _cpu_model() -> str:
    """The CPU's model name (Linux /proc/cpuinfo; platform.processor() elsewhere)."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git_commit() -> Optional[str]:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).resolve().parent,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def load_average() -> Optional[list[float]]:
    """1, 5 and 15 minute load averages (None where the OS has none): note them with CPU timings."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (OSError, AttributeError):
        return None


def machine(device: Optional[torch.device] = None) -> dict[str, Any]:
    """Description of where a benchmark ran: CPU model, cores, torch threads, load, GPU name if any, versions."""
    info: dict[str, Any] = {
        "cpu": _cpu_model(),
        "cpu_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average": load_average(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "gpu": None,
        "commit": _git_commit(),
    }
    try:
        import freqkit

        # where the measured library came from (a run can put another checkout's src/ on PYTHONPATH)
        info["freqkit"] = {"version": getattr(freqkit, "__version__", None), "path": str(Path(freqkit.__file__).resolve().parent)}
    except ImportError:  # pragma: no cover
        info["freqkit"] = None
    try:
        import timm

        info["timm"] = timm.__version__
    except ImportError:  # pragma: no cover
        info["timm"] = None
    if torch.cuda.is_available():
        index = (
            device.index
            if device is not None and device.type == "cuda" and device.index is not None
            else torch.cuda.current_device()
        )
        info["gpu"] = torch.cuda.get_device_name(index)
        info["gpu_memory_gib"] = round(torch.cuda.get_device_properties(index).total_memory / 2**30, 1)
    return info


def describe(device: torch.device) -> str:
    """One line for the table header: GPU name or CPU model with the torch thread count and load."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    load = load_average()
    return f"{_cpu_model()}, {torch.get_num_threads()} threads" + (f", load {load[0]:.2f}" if load else "")


def add_common_args(parser: argparse.ArgumentParser) -> None:
    """--json PATH (machine-readable results)."""
    parser.add_argument("--json", default="", metavar="PATH", help="also write the results as JSON to PATH (atomically)")


def pick(parser: argparse.ArgumentParser, text: str, known: Iterable[str], what: str = "models") -> list[str]:
    """The comma-separated names of ``text``; an unknown one ends the program with argparse's one-line error."""
    names = [m for m in text.split(",") if m]
    unknown = sorted(set(names) - set(known))
    if unknown:
        parser.error(f"unknown {what} {unknown}; choose from {list(known)}")
    return names


def sync(device: torch.device) -> None:
    """Wait for queued GPU work, so that host clocks measure it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def clock(kind: str) -> Callable[[], float]:
    """``wall``: perf_counter; ``cpu``: this process's CPU time over all threads (steadier on a loaded machine)."""
    return time.process_time if kind == "cpu" else time.perf_counter


def time_interleaved(
    fns: dict[str, Callable[[], object]],
    repeats: int,
    warmup: int,
    device: torch.device,
    clock_kind: str = "wall",
    calls: int = 1,
    alternate: bool = True,
) -> dict[str, list[float]]:
    """Seconds per call of every fn, interleaved: each repeat runs every fn ``calls`` times, in turn.

    Why not ``torch.utils.benchmark.Timer`` here: Timer measures one statement in a block of
    back-to-back runs, so on a machine shared with other jobs a load change between two Timers
    lands on one model only. Interleaving puts every model in every repeat, and the ratio of
    two models *in the same repeat* cancels the load; ``paired_ratio`` takes the median of those.
    Timer (``timer_stats``) is used for single-model statistics where nothing is compared.
    """
    tick = clock(clock_kind)
    names = list(fns)
    times: dict[str, list[float]] = {k: [] for k in names}
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    sync(device)
    for r in range(repeats):
        order = names if (r % 2 == 0 or not alternate) else list(reversed(names))
        for name in order:
            sync(device)
            t0 = tick()
            for _ in range(calls):
                fns[name]()
            sync(device)
            times[name].append((tick() - t0) / calls)
    return times


def paired_ratio(times: Sequence[float], base: Sequence[float]) -> float:
    """Median over repeats of time / baseline time in the same repeat (load changes cancel)."""
    return statistics.median(t / b for t, b in zip(times, base))


def timer_stats(
    fn: Callable[[], object], label: str, min_run_time: float = 0.5, num_threads: Optional[int] = None
) -> dict[str, float]:
    """Median / IQR seconds of fn via ``torch.utils.benchmark.Timer.blocked_autorange`` (handles CUDA sync, warm-up)."""
    from torch.utils import benchmark

    t = benchmark.Timer(stmt="fn()", globals={"fn": fn}, label=label, num_threads=num_threads or torch.get_num_threads())
    m = t.blocked_autorange(min_run_time=min_run_time)
    return {"median_s": m.median, "iqr_s": m.iqr, "runs": len(m.times), "number_per_run": m.number_per_run}


def ratio_entry(value: float, aim: Optional[float] = None, kind: Optional[str] = None) -> dict[str, Any]:
    """A ``ratios`` entry: kind "max" means value <= aim is met, "min" means value >= aim."""
    met = None
    if aim is not None and kind is not None and value == value:  # NaN: not measured
        met = value <= aim if kind == "max" else value >= aim
    return {"value": value, "aim": aim, "kind": kind, "met": met}


def _jsonable(v: Any) -> Any:
    if isinstance(v, float) and v != v:
        return None  # NaN is not JSON
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, (str, int, float, bool)) or v is None:
        return v
    return str(v)


def write_json(
    path: str,
    benchmark: str,
    args: argparse.Namespace | dict,
    results: Iterable[dict],
    ratios: dict[str, dict],
    device: Optional[torch.device] = None,
    extra: Optional[dict] = None,
    argv: Optional[Sequence[str]] = None,
) -> Optional[Path]:
    """Write one benchmark's results (see the module docstring) atomically to ``path``; no-op for an empty path."""
    if not path:
        return None
    from freqkit.io import atomic_write_json

    settings = dict(vars(args)) if isinstance(args, argparse.Namespace) else dict(args)
    settings.pop("json", None)
    obj = {
        "schema": SCHEMA_VERSION,
        "benchmark": benchmark,
        "created": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": " ".join(
            shlex.quote(a)
            for a in [Path(sys.executable).name, "-m", f"benchmarks.{benchmark}", *(sys.argv[1:] if argv is None else argv)]
        ),
        "machine": machine(device),
        "settings": settings,
        "results": list(results),
        "ratios": ratios,
        **(extra or {}),
    }
    out = atomic_write_json(path, _jsonable(obj))
    print(f"wrote {out}")
    return out
