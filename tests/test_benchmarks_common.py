"""The benchmarks' shared helpers: paired ratios, aims, interleaving and the JSON they write."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import torch

# benchmarks/ is not installed with the package: import it from the repository root, however pytest was started
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._common import SCHEMA_VERSION, paired_ratio, ratio_entry, time_interleaved, write_json


def test_paired_ratio_is_the_median_of_same_repeat_ratios():
    # load doubles in repeat 2: per-repeat ratios are 1.1, 1.1, 1.5 -> median 1.1, while the ratio of medians is 2.2 / 2.0
    model, base = [1.1, 2.2, 1.5], [1.0, 2.0, 1.0]
    assert math.isclose(paired_ratio(model, base), 1.1)


def test_ratio_entry_met_by_kind():
    assert ratio_entry(1.05, 1.1, "max")["met"] is True
    assert ratio_entry(1.2, 1.1, "max")["met"] is False
    assert ratio_entry(1.4, 1.3, "min")["met"] is True
    assert ratio_entry(float("nan"), 1.3, "min")["met"] is None
    assert ratio_entry(1.0)["met"] is None


def test_time_interleaved_alternates_order_and_counts_calls():
    seen: list[str] = []
    fns = {"a": lambda: seen.append("a"), "b": lambda: seen.append("b")}
    times = time_interleaved(fns, repeats=2, warmup=1, device=torch.device("cpu"), calls=3)
    assert seen == ["a", "b"] + ["a"] * 3 + ["b"] * 3 + ["b"] * 3 + ["a"] * 3
    assert all(len(v) == 2 and min(v) >= 0 for v in times.values())


def test_write_json_schema(tmp_path):
    args = argparse.Namespace(batch=8, json=str(tmp_path / "r.json"))
    ratios = {"x / y": ratio_entry(float("nan"), 1.1, "max")}
    path = write_json(args.json, "demo", args, [{"model": "m", "median_ms": 1.5}], ratios, argv=["--batch", "8"])
    data = json.loads(path.read_text())
    assert data["schema"] == SCHEMA_VERSION and data["benchmark"] == "demo"
    assert data["settings"] == {"batch": 8}  # the output path itself is not a setting
    assert data["command"].endswith("-m benchmarks.demo --batch 8")
    assert data["machine"]["torch"] == torch.__version__ and data["machine"]["cpu_cores"] >= 1
    assert data["ratios"]["x / y"]["value"] is None  # NaN (not measured) is written as null
    assert not list(tmp_path.glob(".*.tmp"))  # atomic write leaves no temp file
