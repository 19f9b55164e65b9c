"""torchrun -m freqkit analyze with 2 gloo processes on CPU gives the report of one process."""

from __future__ import annotations

import json
import math
import subprocess

import numpy as np
import pytest
from ddp_launch import freqkit_torchrun, torchrun_env

import freqkit.cli as cli


@pytest.fixture(autouse=True)
def _only_analyze(monkeypatch):
    # the other subcommands are tested on their own; a broken sibling must not fail this test
    monkeypatch.setattr(cli, "SUBCOMMANDS", {"analyze": "analyze"})


def _numbers(obj, path=""):
    """(path, list of floats) for every numeric leaf list / number of a report dict."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _numbers(v, f"{path}.{k}")
    elif isinstance(obj, list) and obj and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in obj):
        yield path, [float(v) for v in obj]
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _numbers(v, f"{path}[{i}]")
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
        yield path, [float(obj)]


def test_two_gloo_processes_match_one_process(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(7):  # odd count: the ranks get 4 and 3 images
        sub = tmp_path / "imgs" / ("a" if i % 2 else "b")
        sub.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (40 + i, 50, 3), dtype=np.uint8)).save(sub / f"{i}.png")
    args = [
        "deit_tiny_patch16_224",
        "--images",
        str(tmp_path / "imgs"),
        "--img-size",
        "32",
        "--batch-size",
        "2",
        "--workers",
        "0",
        "--attention",
        "--erf",
        "--no-figures",
        "--quiet",
        "--device",
        "cpu",
    ]
    env = torchrun_env()
    assert cli.main(["analyze", *args, "--out", str(tmp_path / "one")]) == 0
    cmd = [
        *freqkit_torchrun(),
        "analyze",
        *args,
        "--out",
        str(tmp_path / "two"),
    ]
    two = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert two.returncode == 0, two.stderr[-3000:]
    a = json.loads((tmp_path / "one" / "report.json").read_text())
    b = json.loads((tmp_path / "two" / "report.json").read_text())
    assert a["settings"]["num_images"] == b["settings"]["num_images"] == 7  # none dropped, none twice
    assert a["settings"]["processes"] == 1 and b["settings"]["processes"] == 2
    assert sorted(p.name for p in (tmp_path / "two" / "state").iterdir()) == [
        "analyze-state-rank0of2.pt",
        "analyze-state-rank1of2.pt",
    ]
    la, lb = dict(_numbers(a["models"])), dict(_numbers(b["models"]))
    assert (
        la.keys() == lb.keys()
        and any(".heads." in k for k in la)
        and any(".erf." in k for k in la)
        and any(".cka" in k for k in la)
    )
    for key, xs in la.items():
        ys = lb[key]
        scale = max(1e-12, max(abs(v) for v in xs))
        assert len(xs) == len(ys) and all(math.isclose(x, y, rel_tol=1e-4, abs_tol=1e-4 * scale) for x, y in zip(xs, ys)), key
