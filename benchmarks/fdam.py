"""Inference cost of FDAM (AttInv + FreqScale) against timm DeiT-S, and of the fused attention path
against the explicit-matrix reference path, measured side by side.

    python -m benchmarks.fdam                          # 224x224 batch 32 and 512x2048 batch 1 (seed Table 4)
    python -m benchmarks.fdam --quick                  # 224x224 batch 4 and 256x512 batch 1, 1 repeat
    python -m benchmarks.fdam --device cuda --dtypes float32,bfloat16
    python -m benchmarks.fdam --clock cpu --threads 1  # steadier on a shared CPU machine
    python -m benchmarks.fdam --device cuda --compile --json fdam.json   # torch.compile of every model, JSON out

Models, eval mode, random weights: ``timm deit_small`` (timm's fused attention), ``fdam fused``
(``deit_small_fdam_patch16_224``, SDPA + AttInv on A V, FreqScale), ``fdam explicit`` (the same
model with ``fused=False``: the N x N attention matrix is built). Large images run with
``dynamic_img_size=True`` (position embeddings resampled to the 32 x 128 grid, CLS token kept).

Latency: the three models are timed interleaved (each repeat runs every model once, alternating
order), and ``time x`` is the median over repeats of model / baseline in the same repeat, so load
changes on a shared machine cancel (on a loaded machine, also pass ``--threads 1 --clock cpu``:
with idle-waiting OpenMP threads the many small FDAM ops suffer far more than large GEMMs).
Peak memory: one fresh subprocess per (setting, model, dtype), one warm-up forward, then the rise
of the process high-water mark during one forward over the level before it (CPU: anonymous memory
from /proc/self/status with the high-water mark reset, glibc's mmap threshold fixed so that freed
buffers leave; CUDA: ``max_memory_allocated``).
Aims: FDAM <= 1.10x timm latency on CPU (1.05x on GPU) and <= 1.1x peak memory; at 512x2048 the
fused path >= 1.5x faster and <= 0.5x the peak memory of the explicit path.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
from typing import Callable

import torch
from torch import nn

from benchmarks._common import add_common_args, describe, paired_ratio, pick, ratio_entry, time_interleaved, write_json
from benchmarks._common import sync as _sync

MODELS = ("timm deit_small", "fdam fused", "fdam explicit")
FULL = {"224": (32, 224, 224), "512x2048": (1, 512, 2048)}
QUICK = {"224": (4, 224, 224), "512x2048": (1, 256, 512)}


def _build(name: str, hw: tuple[int, int]) -> nn.Module:
    import timm

    import freqkit.models  # noqa: F401  (registers the FDAM models)
    from freqkit.layers import Attention

    kwargs = {} if hw == (224, 224) else dict(dynamic_img_size=True)
    timm_name = "deit_small_patch16_224" if name == "timm deit_small" else "deit_small_fdam_patch16_224"
    model = timm.create_model(timm_name, **kwargs).eval()
    if name == "fdam explicit":
        for m in model.modules():
            if isinstance(m, Attention):
                m.fused = False
    return model


def _forward_fn(model: nn.Module, x: torch.Tensor, dtype: str) -> Callable[[], torch.Tensor]:
    amp = dtype == "bfloat16"

    def run() -> torch.Tensor:
        with torch.inference_mode(), torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp):
            return model(x)

    return run


def _peak_memory_worker(setting: str, name: str, dtype: str, device: str, batch: int, h: int, w: int, threads: int) -> None:
    """Print {"peak_mb": ...}: extra peak memory of one forward (after one warm-up forward on CUDA)."""
    if threads:
        torch.set_num_threads(threads)
    dev = torch.device(device)
    torch.manual_seed(0)
    model = _build(name, (h, w)).to(dev)
    x = torch.randn(batch, 3, h, w, device=dev)
    run = _forward_fn(model, x, dtype)
    if dev.type == "cuda":
        run()
        _sync(dev)
        torch.cuda.reset_peak_memory_stats(dev)
        base = torch.cuda.memory_allocated(dev)
        run()
        _sync(dev)
        peak = torch.cuda.max_memory_allocated(dev) - base
    else:
        run()  # first forward: lazy library state (thread pools, kernels) stays resident
        base = _reset_cpu_peak()
        run()
        peak = _cpu_peak_since(base)
    print(json.dumps({"peak_mb": peak / 2**20}))


def _status() -> dict[str, int]:
    """Memory fields of /proc/self/status in KiB (Linux); empty elsewhere."""
    try:
        with open("/proc/self/status") as fh:
            return {k: int(v.split()[0]) for k, v in (line.split(":", 1) for line in fh) if v.strip().endswith("kB")}
    except OSError:
        return {}


def _reset_cpu_peak() -> dict[str, int]:
    """Return memory freed so far to the OS and reset the high-water mark to the current resident
    size; returns the memory fields at that point (Linux; elsewhere ru_maxrss only)."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")  # resets the peak resident set size (VmHWM) to the current one
    except OSError:
        pass
    return _status() or {"VmHWM": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}


def _cpu_peak_since(base: dict[str, int]) -> float:
    """Bytes of anonymous memory (activations, attention matrices, FFT buffers) at the forward's peak
    beyond the level before it. VmHWM counts file-backed pages too, and a machine that reclaims cold
    pages (library code) re-reads them during the forward: those are subtracted."""
    now = _status()
    if "RssAnon" not in base or "RssAnon" not in now:
        return float((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base["VmHWM"]) * 1024)
    non_anon_now = now.get("RssFile", 0) + now.get("RssShmem", 0)
    return float(max(0, now["VmHWM"] - non_anon_now - base["RssAnon"]) * 1024)


def _peak_memory(setting: str, name: str, dtype: str, args: argparse.Namespace, shape: tuple[int, int, int]) -> float:
    cmd = [
        sys.executable,
        "-m",
        "benchmarks.fdam",
        "--_memory-worker",
        setting,
        name,
        dtype,
        args.device,
        *map(str, shape),
        str(args.threads),
    ]
    # a fixed mmap threshold gives each large buffer its own mapping, returned to the OS when freed, so
    # the high-water mark is the peak of live tensors rather than glibc heap slack (CPU only)
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="131072")
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"memory worker failed for {setting} {name} {dtype}:\n{out.stderr[-2000:]}")
    return float(json.loads(out.stdout.strip().splitlines()[-1])["peak_mb"])


def _supported_dtypes(device: torch.device) -> list[str]:
    if device.type == "cuda":
        return ["float32", "bfloat16"] if torch.cuda.is_bf16_supported() else ["float32"]
    return ["float32", "bfloat16"] if torch.ops.mkldnn._is_mkldnn_bf16_supported() else ["float32"]


def main(argv: list[str] | None = None) -> int:
    if argv is None and len(sys.argv) > 1 and sys.argv[1] == "--_memory-worker":
        setting, name, dtype, device, b, h, w, threads = sys.argv[2:10]
        _peak_memory_worker(setting, name, dtype, device, int(b), int(h), int(w), int(threads))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--settings", default="224,512x2048", help="comma list of 224, 512x2048")
    parser.add_argument("--dtypes", default="", help="comma list of float32, bfloat16 (default: those the device supports)")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds; medians are reported")
    parser.add_argument("--warmup", type=int, default=1, help="untimed forwards per model first")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: leave the default)")
    parser.add_argument("--quick", action="store_true", help="small shapes (224 batch 4, 256x512 batch 1), 1 repeat")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall", help="cpu: process CPU time (CPU device only)")
    parser.add_argument("--batch", type=int, default=0, help="override the batch of every setting")
    parser.add_argument("--calls", type=int, default=1, help="forwards per model per repeat (more for short GPU forwards)")
    parser.add_argument(
        "--models", default=",".join(MODELS), help=f"comma list out of {', '.join(MODELS)} (the first is the baseline)"
    )
    parser.add_argument("--compile", action="store_true", help="torch.compile every model (compiled FDAM against compiled timm)")
    add_common_args(parser)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.clock == "cpu" and device.type != "cpu":
        parser.error("--clock cpu measures host CPU time; use it with --device cpu")
    shapes = QUICK if args.quick else FULL
    repeats = 1 if args.quick else args.repeats
    dtypes = [d for d in args.dtypes.split(",") if d] or _supported_dtypes(device)
    settings = [s for s in args.settings.split(",") if s]
    names = pick(parser, args.models, MODELS)
    print(
        f"FDAM inference benchmark on {describe(device)}, torch {torch.__version__}; eval, random weights; "
        f"{repeats} interleaved repeats after {args.warmup} warm-up, {args.clock} clock{', torch.compile' if args.compile else ''}"
    )
    header = f"{'setting':<24} {'dtype':<9} {'model':<16} {'median ms':>10} {'time x':>7} {'vs expl':>8} {'peak MB':>9} {'mem x':>6} {'mem vs expl':>11}"
    print(header)
    print("-" * len(header))
    rows: list[dict] = []
    ratios: dict[str, dict] = {}
    aim_time = 1.05 if device.type == "cuda" else (1.10, 1.15)
    for setting in settings:
        b, h, w = shapes[setting]
        b = args.batch or b
        torch.manual_seed(0)
        models = {name: _build(name, (h, w)).to(device) for name in names}
        if args.compile:
            models = {name: torch.compile(m) for name, m in models.items()}
        x = torch.randn(b, 3, h, w, device=device)
        base_name = names[0]
        for dtype in dtypes:
            runs = {name: _forward_fn(m, x, dtype) for name, m in models.items()}
            # interleaved rounds, not torch.utils.benchmark.Timer: see time_interleaved
            times = time_interleaved(runs, repeats, args.warmup, device, args.clock, calls=args.calls)
            base = times[base_name]
            expl = times.get("fdam explicit")
            # memory of compiled models would count the compiler itself: eager peaks only
            measure_mem = not args.no_memory and not args.compile
            peaks = {name: _peak_memory(setting, name, dtype, args, (b, h, w)) for name in names} if measure_mem else {}
            label = f"{setting} (B={b}, {h}x{w})"
            for name in names:
                ratio = paired_ratio(times[name], base)
                vs_expl = paired_ratio(times[name], expl) if expl else float("nan")
                mem = peaks.get(name, float("nan"))
                mem_x = mem / peaks[base_name] if peaks else float("nan")
                mem_e = mem / peaks["fdam explicit"] if peaks and "fdam explicit" in peaks else float("nan")
                print(
                    f"{label:<24} {dtype:<9} {name:<16} {statistics.median(times[name]) * 1e3:>10.1f} {ratio:>7.3f} "
                    f"{vs_expl:>8.3f} {mem:>9.1f} {mem_x:>6.2f} {mem_e:>11.2f}"
                )
                rows.append(
                    dict(
                        setting=setting,
                        batch=b,
                        height=h,
                        width=w,
                        dtype=dtype,
                        model=name,
                        compiled=args.compile,
                        times_ms=[t * 1e3 for t in times[name]],
                        median_ms=statistics.median(times[name]) * 1e3,
                        time_x=ratio,
                        vs_explicit=vs_expl,
                        peak_mb=mem,
                        mem_x=mem_x,
                        mem_vs_explicit=mem_e,
                    )
                )
            if "fdam fused" in times and base_name == "timm deit_small":
                aim = aim_time if isinstance(aim_time, float) else aim_time[dtype == "bfloat16"]
                key = f"{setting} {dtype}{' compiled' if args.compile else ''}"
                ratios[f"fdam/timm time {key}"] = ratio_entry(paired_ratio(times["fdam fused"], base), aim, "max")
                if peaks:
                    ratios[f"fdam/timm peak memory {key}"] = ratio_entry(peaks["fdam fused"] / peaks[base_name], 1.1, "max")
                if expl and setting == "512x2048":
                    ratios[f"explicit/fused time {key}"] = ratio_entry(paired_ratio(expl, times["fdam fused"]), 1.5, "min")
        del models
    print(
        "time x / mem x: relative to the first model (time: median of per-repeat ratios); vs expl: relative to the explicit path"
    )
    write_json(args.json, "fdam", args, rows, ratios, device, argv=argv)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
