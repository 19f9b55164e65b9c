"""Every GPU benchmark of the speed aims in one call, all JSON in one folder (about 8 minutes on one H200).

    PYTHONPATH=src python -m benchmarks.gpu_suite --out bench_gpu       # on a CUDA machine
    PYTHONPATH=src python -m benchmarks.gpu_suite --smoke --out /tmp/s  # tiny settings on CPU: checks that it runs

Steps (each a fresh process, so one model's compiler caches or allocator state cannot leak into
the next; eager tables first, ``torch.compile`` last, so a tight time budget drops compiled runs):

1. FDAM DeiT-S vs timm DeiT-S (and the explicit path) at 512 x 2048 batch 1, float32 and bf16, with peak memory.
2. The same at 224 batch 64.
3. SPANet-S and SPANetV2-S18 vs ``convformer_s18`` at 224 batch 64, float32 and bf16.
4. SPAM v1 / v2 layers, fast vs reference, at the stage shapes of 224 batch 64.
5. GFSA DeiT-S training step vs DeiT-S, bf16 autocast, batch 128.
6-8. ``torch.compile`` of FDAM, SPANet and GFSA against compiled timm (224 batch 64; GFSA batch 128 bf16).

Every step writes ``<out>/<step>.json`` (schema in ``benchmarks._common``) and ``<out>/<step>.log``;
``<out>/summary.json`` lists each step's status and every aim's ratio, met or missed. A step that
would start after ``--budget`` seconds is skipped, and each one gets at most the time left.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from benchmarks._common import machine

# Argument tables read best one step per line.
# fmt: off
# (step, module, arguments): GPU settings. Repeats x calls per repeat are sized for about 8 minutes on an H200.
GPU_STEPS: list[tuple[str, str, list[str]]] = [
    ("fdam_512x2048", "fdam", ["--device", "cuda", "--settings", "512x2048", "--dtypes", "float32,bfloat16",
                               "--repeats", "10", "--calls", "5", "--warmup", "3"]),
    ("fdam_224_b64", "fdam", ["--device", "cuda", "--settings", "224", "--batch", "64", "--dtypes", "float32,bfloat16",
                              "--repeats", "10", "--calls", "5", "--warmup", "3"]),
    ("spanet_224_b64", "spanet", ["--device", "cuda", "--sizes", "224:64", "--dtypes", "float32,bfloat16", "--models-only",
                                  "--models", "spanet_small [bins],spanetv2_s18_pure [fused],convformer_s18 (timm),"
                                  "spanet_small [reference],spanetv2_s18_pure [reference]",
                                  "--repeats", "10", "--calls", "5", "--warmup", "3"]),
    ("spam_layers_224_b64", "spanet", ["--device", "cuda", "--sizes", "224:64", "--dtypes", "float32,bfloat16", "--layers-only",
                                       "--repeats", "10", "--calls", "5", "--warmup", "3"]),
    ("gfsa_train_b128_bf16", "antismooth", ["--device", "cuda", "--batch", "128", "--amp", "--methods", "gfsa",
                                            "--steps", "3", "--repeats", "7", "--warmup", "2"]),
    ("fdam_compiled_224_b64", "fdam", ["--device", "cuda", "--settings", "224", "--batch", "64", "--dtypes", "float32,bfloat16",
                                       "--models", "timm deit_small,fdam fused", "--compile", "--no-memory",
                                       "--repeats", "10", "--calls", "5", "--warmup", "2"]),
    ("spanet_compiled_224_b64", "spanet", ["--device", "cuda", "--sizes", "224:64", "--dtypes", "float32", "--models-only",
                                           "--models", "spanet_small [bins],spanetv2_s18_pure [fused],convformer_s18 (timm)",
                                           "--compile", "--repeats", "10", "--calls", "5", "--warmup", "2"]),
    ("gfsa_train_compiled_b128_bf16", "antismooth", ["--device", "cuda", "--batch", "128", "--amp", "--methods", "gfsa",
                                                     "--compile", "--steps", "3", "--repeats", "5", "--warmup", "2"]),
]

# the same steps at tiny sizes on CPU: only checks that every step runs and writes its JSON
SMOKE_STEPS: list[tuple[str, str, list[str]]] = [
    ("fdam_512x2048", "fdam", ["--quick", "--settings", "512x2048", "--dtypes", "float32", "--repeats", "1", "--threads", "1"]),
    ("fdam_224_b64", "fdam", ["--quick", "--settings", "224", "--batch", "1", "--dtypes", "float32", "--repeats", "1",
                              "--threads", "1", "--no-memory"]),
    ("spanet_224_b64", "spanet", ["--sizes", "64:1", "--dtypes", "float32", "--models-only", "--repeats", "1", "--warmup", "0",
                                  "--models", "spanet_small [bins],spanetv2_s18_pure [fused],convformer_s18 (timm)", "--threads", "1"]),
    ("spam_layers_224_b64", "spanet", ["--sizes", "64:1", "--dtypes", "float32", "--layers-only", "--repeats", "1", "--threads", "1"]),
    ("gfsa_train_b128_bf16", "antismooth", ["--batch", "1", "--img-size", "64", "--amp", "--methods", "gfsa", "--steps", "1",
                                            "--repeats", "1", "--warmup", "0", "--threads", "1"]),
    ("fdam_compiled_224_b64", "fdam", ["--quick", "--settings", "224", "--batch", "1", "--dtypes", "float32",
                                       "--models", "timm deit_small,fdam fused", "--compile", "--no-memory", "--repeats", "1", "--threads", "1"]),
]
# fmt: on


def _run_step(name: str, module: str, argv: list[str], out: Path, timeout: float) -> dict:
    """Run one benchmark in a fresh process with ``--json``; its output goes to ``<out>/<name>.log``."""
    json_path = out / f"{name}.json"
    cmd = [sys.executable, "-m", f"benchmarks.{module}", *argv, "--json", str(json_path)]
    t0 = time.perf_counter()
    log = out / f"{name}.log"
    with open(log, "w") as fh:
        try:
            rc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, timeout=timeout, check=False).returncode
            status = "ok" if rc == 0 and json_path.exists() else f"failed (exit {rc})"
        except subprocess.TimeoutExpired:
            status = f"timed out after {timeout:.0f} s"
    return {
        "step": name,
        "status": status,
        "seconds": round(time.perf_counter() - t0, 1),
        "command": " ".join(cmd[1:]),
        "json": json_path.name if json_path.exists() else None,
        "log": log.name,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="folder for the JSON and log files (created)")
    parser.add_argument("--budget", type=float, default=480.0, help="seconds: steps that would start later are skipped")
    parser.add_argument("--smoke", action="store_true", help="tiny settings on CPU (checks that every step runs)")
    parser.add_argument("--only", default="", help="comma list of step names to run (default: all)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    steps = SMOKE_STEPS if args.smoke else GPU_STEPS
    only = {s for s in args.only.split(",") if s}
    if only - {s[0] for s in steps}:
        parser.error(f"unknown steps {sorted(only - {s[0] for s in steps})}; choose from {[s[0] for s in steps]}")
    if not args.smoke:
        import torch

        if not torch.cuda.is_available():
            parser.error("no CUDA device: run on a GPU machine, or pass --smoke for the tiny CPU check")
    start = time.perf_counter()
    report = []
    for name, module, step_argv in steps:
        if only and name not in only:
            continue
        left = args.budget - (time.perf_counter() - start)
        if left < 20:
            report.append({"step": name, "status": "skipped (time budget)", "seconds": 0.0})
            print(f"{name:<32} skipped (time budget)", flush=True)
            continue
        res = _run_step(name, module, step_argv, out, left)
        report.append(res)
        print(f"{name:<32} {res['status']:<20} {res['seconds']:>7.1f} s", flush=True)

    ratios = {}
    for res in report:
        if res.get("json"):
            data = json.loads((out / res["json"]).read_text())
            ratios.update({f"{res['step']}: {k}": v for k, v in data.get("ratios", {}).items()})
    from freqkit.io import atomic_write_json

    atomic_write_json(
        out / "summary.json",
        {
            "schema": 1,
            "benchmark": "gpu_suite",
            "smoke": args.smoke,
            "machine": machine(),
            "budget_s": args.budget,
            "total_s": round(time.perf_counter() - start, 1),
            "steps": report,
            "ratios": ratios,
        },
    )
    print(f"\n{'aim':<100} {'value':>7} {'aim':>6}  met")
    for key, r in ratios.items():
        if r.get("aim") is not None:
            sign = "<=" if r["kind"] == "max" else ">="
            value = "nan" if r["value"] is None else f"{r['value']:.3f}"
            print(f"{key:<100} {value:>7} {sign}{r['aim']:<4}  {r['met']}")
    print(f"wrote {out / 'summary.json'} ({time.perf_counter() - start:.0f} s)")
    return 0 if all(r["status"] == "ok" for r in report if not r["status"].startswith("skipped")) else 1


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    raise SystemExit(main())
