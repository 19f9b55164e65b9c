"""A failure on one torchrun rank ends every rank, with one line naming the rank and the cause (2 gloo processes)."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import numpy as np
import pytest
from ddp_launch import freqkit_torchrun, torchrun_env


def _torchrun(args: list[str], timeout: float = 120, extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    env = torchrun_env(**(extra_env or {}))
    cmd = [
        *freqkit_torchrun(),
        *args,
    ]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        # torchrun starts each worker in a session of its own: end the workers first, then torchrun (nothing left behind)
        for pid in _descendants(proc.pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"a rank hung: torchrun still ran after {timeout} s; output: {err[-1500:]}")
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (from /proc; empty where there is none)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = entry.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry.parent.name))
    found, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            found.append(c)
            todo.append(c)
    return found


def _pngs(folder: Path, count: int, size: int = 40) -> list[Path]:
    from PIL import Image

    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        p = folder / f"{i}.png"
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(p)
        paths.append(p)
    return paths


def _truncate(path: Path) -> None:
    """Keep the header (the file still opens) but cut the pixel data: decoding fails."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_analyze_a_bad_image_on_rank_1_ends_both_ranks(tmp_path):
    paths = _pngs(tmp_path / "imgs", 6)
    _truncate(paths[5])  # sorted order 0..5: rank 1 reads 1, 3, 5; the header is fine, so it fails mid-pass
    run = _torchrun(
        [
            "analyze",
            "deit_tiny_patch16_224",
            "--images",
            str(tmp_path / "imgs"),
            "--img-size",
            "32",
            "--batch-size",
            "1",
            "--workers",
            "0",
            "--no-figures",
            "--quiet",
            "--device",
            "cpu",
            "--out",
            str(tmp_path / "out"),
        ]
    )
    assert run.returncode != 0
    err = run.stderr + run.stdout
    assert "rank 1" in err and "5.png" in err, err[-3000:]
    # rank 0 says why it stopped too, naming rank 1
    assert "rank 1 of 2 failed during analyze" in err, err[-3000:]


def _image_folder(root: Path, per_class: int = 6, classes: int = 2) -> list[Path]:
    """ROOT/{train,val}/<class>/*.png; returns the training images in the dataset's order (class, then name)."""
    train = []
    for split in ("train", "val"):
        for c in range(classes):
            made = _pngs(root / split / f"c{c}", per_class if split == "train" else 2, size=32)
            if split == "train":
                train += sorted(made)
    return train


def test_train_a_truncated_training_image_on_rank_1_ends_both_ranks(tmp_path):
    from torch.utils.data import DistributedSampler

    train_images = _image_folder(tmp_path / "data")
    # the first batch of rank 1 (2 images) under torch's DistributedSampler with the run's seed; rank 0 never reads it
    first = list(DistributedSampler(range(len(train_images)), num_replicas=2, rank=1, shuffle=True, seed=0, drop_last=True))[:2]
    victim = train_images[first[0]]
    _truncate(victim)
    run = _torchrun(
        [
            "train",
            "--model",
            "vit_micro",
            "--data",
            f"imagefolder:{tmp_path / 'data'}",
            "--img-size",
            "32",
            "--steps",
            "3",
            "--batch-size",
            "2",
            "--device",
            "cpu",
            "--no-progress",
            "--out",
            str(tmp_path / "out"),
        ]
    )
    assert run.returncode != 0
    err = run.stderr + run.stdout
    assert f"rank 1: cannot read image {victim}" in err, err[-3000:]
    # rank 0 was waiting in the gradient all-reduce: it names rank 1 instead of the backend's error
    assert "rank 1 of 2 failed during train" in err or "Sending process" in err, err[-3000:]
