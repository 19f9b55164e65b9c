"""torchrun -m freqkit compare: the runs spread over 2 gloo processes give the numbers of one process."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading

import pytest
import torch
from ddp_launch import free_port, freqkit_torchrun, torchrun_env

from freqkit.distributed import TaskBoard
from freqkit.io import RunLock

FLAGS = ["--models", "vit_micro,vit_micro+fdam", "--data", "shapes:size=32,train=64,val=16", "--steps", "6",
         "--seeds", "2", "--batch-size", "8", "--no-progress", "--analyze-images", "4"]  # fmt: skip
TIMING = ("seconds", "seconds_per_step", "img_per_s")


def _run(cmd, **extra):
    return subprocess.run(cmd, capture_output=True, text=True, env=torchrun_env(**extra), timeout=300)


def _strip_timing(obj):
    """A results.json without the wall-clock fields, which differ between any two runs."""
    if isinstance(obj, dict):
        return {k: _strip_timing(v) for k, v in obj.items() if k not in TIMING}
    if isinstance(obj, list):
        return [_strip_timing(v) for v in obj]
    return obj


def _results(folder):
    return json.loads((folder / "results.json").read_text())


def test_two_processes_give_the_numbers_of_one(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    r1 = _run([sys.executable, "-m", "freqkit", "compare", *FLAGS, "--out", str(one)])
    assert r1.returncode == 0, r1.stderr[-2000:]
    r2 = _run([*freqkit_torchrun(2), "compare", *FLAGS, "--out", str(two)])
    assert r2.returncode == 0, r2.stderr[-2000:]
    a, b = _results(one), _results(two)
    assert (a["settings"]["processes"], b["settings"]["processes"]) == (1, 2)
    # every run is seeded and trained alone: the same losses, metrics and spectral curves, bit for bit
    assert _strip_timing(a["runs"]) == _strip_timing(b["runs"])
    assert _strip_timing(a["summary"]) == _strip_timing(b["summary"])
    assert r2.stdout.count("wrote ") == 1  # rank 0 alone prints the table and writes the report
    assert (two / "report.html").is_file() and (two / "analysis").is_dir()
    # resume in one process reuses all four runs, whichever rank trained them
    r3 = _run([sys.executable, "-m", "freqkit", "compare", *FLAGS, "--out", str(two), "--resume"])
    assert r3.returncode == 0, r3.stderr[-2000:]
    assert r3.stderr.count("reusing the finished run") == 4
    assert _strip_timing(_results(two)["runs"]) == _strip_timing(a["runs"])


SCRIPT = """
import sys, torch, timm, freqkit

def fresh():
    return timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2,
                             num_classes=4)

class Broken(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.net = fresh()
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        if self.training and self.calls > 3:  # past the preflight image: fails in its first steps
            raise RuntimeError("simulated failure in training")
        return self.net(x)

try:
    cmp = freqkit.compare({"ok": fresh, "broken": Broken}, data="textures:size=32,train=64,val=16,classes=4",
                          steps=4, seeds=(0, 1), batch_size=8, out=sys.argv[1], progress=False, analyze_images=2)
except freqkit.FreqkitError as err:
    print("ERROR", err)
    sys.exit(2)
print("SUMMARY", sorted(cmp.summary))
"""


def test_a_failed_run_names_itself_and_the_finished_runs_are_kept(tmp_path):
    script = tmp_path / "spread.py"
    script.write_text(textwrap.dedent(SCRIPT))
    out = tmp_path / "cmp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
           "--master_addr", "127.0.0.1", "--master_port", str(free_port()), str(script), str(out)]  # fmt: skip
    r = _run(cmd)
    assert r.returncode != 0
    lines = [line for line in r.stdout.splitlines() if line.startswith("ERROR")]
    assert len(lines) == 2  # the same one line on both ranks
    assert lines[0] == lines[1]
    assert "broken seed" in lines[0] and "simulated failure in training" in lines[0] and "2 of 4 runs failed" in lines[0]
    assert "the 2 finished runs are kept" in lines[0] and "--resume" in lines[0]
    for seed in (0, 1):
        assert (out / "runs" / "ok" / f"seed{seed}" / "metrics.json").is_file()
    assert not (out / "results.json").exists()


def test_a_folder_in_use_stops_every_rank_before_any_run(tmp_path):
    out = tmp_path / "cmp"
    lock = RunLock(out).acquire()
    try:
        r = _run([*freqkit_torchrun(2), "compare", *FLAGS, "--out", str(out)])
    finally:
        lock.release()
    assert r.returncode != 0  # torchrun's own code when a worker fails; each worker exits with 2
    errors = [line for line in r.stderr.splitlines() if "in use by another freqkit run" in line]
    assert len(errors) == 2, r.stderr[-3000:]  # one line from each rank
    assert any("rank 0 of 2 failed during compare" in line and "rank 1 stopped too" in line for line in errors)
    assert not (out / "runs").exists()


def _board(store, rank: int, world: int) -> TaskBoard:
    return TaskBoard(store, rank, world, poll=0.01)


def test_task_board_hands_each_task_to_exactly_one_process():
    store = torch.distributed.HashStore()
    claimed: dict[int, list[int]] = {0: [], 1: [], 2: []}

    def worker(rank: int) -> None:
        board = _board(store, rank, 3)
        for i in board.claim(20):
            claimed[rank].append(i)
            board.post(f"task/{i}", i * i)
        board.idle()

    threads = [threading.Thread(target=worker, args=(r,)) for r in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sorted(i for c in claimed.values() for i in c) == list(range(20))
    assert _board(store, 0, 3).outcomes(20) == {i: i * i for i in range(20)}


def test_task_board_abort_stops_claims_and_keeps_the_first_line():
    store = torch.distributed.HashStore()
    a, b = _board(store, 0, 2), _board(store, 1, 2)
    claims = a.claim(10)
    assert next(claims) == 0
    b.abort("rank 1: first")
    a.abort("rank 0: second")
    assert list(claims) == []
    assert (a.aborted(), b.aborted()) == ("rank 1: first", "rank 1: first")


def test_task_board_wait_posted_returns_on_the_post_or_on_an_abort():
    store = torch.distributed.HashStore()
    a, b = _board(store, 0, 2), _board(store, 1, 2)
    threading.Timer(0.05, a.post, args=("ready", True)).start()
    assert b.wait_posted("ready") is True
    threading.Timer(0.05, a.abort, args=("rank 0: no data",)).start()
    assert b.wait_posted("never") is False


@pytest.mark.parametrize("world", [1, 2])
def test_thread_share_divides_the_cores_and_restores(monkeypatch, world):
    from freqkit.experiment.compare import _thread_share

    before = torch.get_num_threads()
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(8)), raising=False)
    with _thread_share(world, "cpu"):
        inside = torch.get_num_threads()
    assert inside == (before if world == 1 else 4)
    assert torch.get_num_threads() == before
