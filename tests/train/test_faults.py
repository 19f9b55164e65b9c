"""A training process killed at any point of a save, then resumed, ends bitwise equal to an uninterrupted run.

Each case forks a child that trains to step 2 (a complete checkpoint), then resumes with
``FREQKIT_FAULT_AT`` set: the child dies by ``os._exit`` (no cleanup, like ``kill -9``) at that point
of the step-4 save, of the final model files, or of the log repair at resume. This process then
resumes the run to its end and compares the weights with those of a run that was never killed.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from freqkit.io import FAULT_EXIT_CODE
from freqkit.train import TrainConfig, train
from freqkit.train.checkpoint import CheckpointDamaged, find_checkpoint

TINY = "shapes:size=32,train=8,val=4"
# every write and rename of a checkpoint save, the final outputs, and the log repair at resume
POINTS = [
    "before_replace:run/log.jsonl",
    "ckpt:start",
    "before_replace:checkpoint.tmp/model.safetensors",
    "ckpt:model",
    "before_replace:checkpoint.tmp/optimizer.safetensors",
    "ckpt:optimizer",
    "before_replace:checkpoint.tmp/state.json",
    "ckpt:state",
    "ckpt:old_moved",
    "ckpt:new_moved",
    "ckpt:done",
    "before_replace:run/model.safetensors",
    "before_replace:run/config.json",
    "before_replace:run/metrics.json",
]

pytestmark = pytest.mark.skipif("fork" not in mp.get_all_start_methods(), reason="needs fork to kill a child cheaply")


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Every run of this module on one thread: the forked children must use one (see _child), and float
    sums differ in their last bits between thread counts, which is not what these tests are about."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _cfg(out: Path, **kw) -> TrainConfig:
    base = dict(
        model="vit_micro",
        data=TINY,
        steps=4,
        batch_size=2,
        lr=3e-3,
        out=str(out),
        progress=False,
        log_every=1,
        ckpt_every=2,
        eval_every=2,
        drop_path=0.1,
    )
    base.update(kw)
    return TrainConfig(**base)


def _child(out: str, point: str) -> None:
    # a forked child must not enter the parent's OpenMP thread pool (it would hang): one thread, as DataLoader workers do
    torch.set_num_threads(1)
    os.environ["FREQKIT_FAULT_AT"] = point
    train(_cfg(Path(out), resume=True))


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "run"
    train(_cfg(out))
    return load_file(str(out / "model.safetensors")), [json.loads(r) for r in (out / "log.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def at_step_2(tmp_path_factory):
    """A run folder stopped at step 2 with a complete checkpoint (copied by each case)."""
    out = tmp_path_factory.mktemp("at2") / "run"
    train(_cfg(out, stop_at=2))
    return out


def _records(out: Path) -> list[tuple[int, str]]:
    return [(r["step"], r["split"]) for r in map(json.loads, (out / "log.jsonl").read_text().splitlines())]


@pytest.mark.parametrize("point", POINTS)
def test_kill_at_every_point_of_a_save_then_resume_is_bitwise_equal(tmp_path, reference, at_step_2, point):
    out = tmp_path / "run"
    shutil.copytree(at_step_2, out)
    proc = mp.get_context("fork").Process(target=_child, args=(str(out), point))
    proc.start()
    proc.join(300)
    if proc.is_alive():
        proc.kill()
        proc.join()
    assert proc.exitcode == FAULT_EXIT_CODE, f"the child did not stop at {point} (exit code {proc.exitcode})"
    found = find_checkpoint(out / "checkpoint")
    assert found is not None and found[1]["step"] in (2, 4)  # a complete checkpoint survives every kill
    train(_cfg(out, resume=True))
    want, want_log = reference
    got = load_file(str(out / "model.safetensors"))
    assert got.keys() == want.keys()
    assert all(torch.equal(got[k], want[k]) for k in want), f"weights differ after a kill at {point}"
    assert _records(out) == [(r["step"], r["split"]) for r in want_log]  # every record once, in order
    assert sorted(p.name for p in out.iterdir() if p.name.startswith("checkpoint")) == ["checkpoint"]


def test_the_issue_state_old_and_tmp_only_resumes_from_the_newest(tmp_path, reference, at_step_2):
    # a save killed mid-rename: checkpoint -> checkpoint.old done, checkpoint.tmp -> checkpoint not yet
    out = tmp_path / "run"
    shutil.copytree(at_step_2, out)
    train(_cfg(out, resume=True, stop_at=4))
    os.replace(out / "checkpoint", out / "checkpoint.tmp")
    shutil.copytree(at_step_2 / "checkpoint", out / "checkpoint.old")
    assert find_checkpoint(out / "checkpoint")[0].name == "checkpoint.tmp"
    res = train(_cfg(out, resume=True))
    assert res.steps_done == 4 and (out / "checkpoint").is_dir() and not (out / "checkpoint.old").exists()
    got = load_file(str(out / "model.safetensors"))
    assert all(torch.equal(got[k], reference[0][k]) for k in reference[0])


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda c: (c / "state.json").write_text('{"step": 2, "conf'), r"state\.json is damaged"),
        (
            lambda c: (c / "optimizer.safetensors").write_bytes((c / "optimizer.safetensors").read_bytes()[:-100]),
            r"optimizer\.safetensors is damaged",
        ),
        (lambda c: (c / "model.safetensors").unlink(), r"lacks model\.safetensors"),
    ],
)
def test_damaged_checkpoint_is_refused_not_restarted(tmp_path, at_step_2, damage, message):
    out = tmp_path / "run"
    shutil.copytree(at_step_2, out)
    log_before = (out / "log.jsonl").read_text()
    damage(out / "checkpoint")
    with pytest.raises(CheckpointDamaged, match=message + r".*restart from step 0"):
        train(_cfg(out, resume=True))
    assert (out / "log.jsonl").read_text() == log_before  # nothing was deleted
    assert (out / "checkpoint").is_dir()


@pytest.mark.slow
def test_cli_process_killed_between_the_two_renames_resumes_bitwise_equal(tmp_path):
    """The same through ``python -m freqkit train`` in fresh processes (the issue's own kill point)."""
    import subprocess
    import sys

    def run(out: Path, *extra: str, fault: str = "") -> int:
        env = {**os.environ, "FREQKIT_FAULT_AT": fault, "PYTHONPATH": os.pathsep.join(sys.path)}
        argv = [
            sys.executable,
            "-m",
            "freqkit",
            "train",
            "--model",
            "vit_micro",
            "--data",
            TINY,
            "--steps",
            "4",
            "--batch-size",
            "2",
            "--ckpt-every",
            "1",
            "--no-progress",
            "--out",
            str(out),
            *extra,
        ]
        return subprocess.run(argv, env=env, capture_output=True, timeout=600).returncode

    assert run(tmp_path / "full") == 0
    assert run(tmp_path / "cut", "--stop-at", "2") == 0
    assert run(tmp_path / "cut", "--resume", fault="ckpt:old_moved") == FAULT_EXIT_CODE
    assert {p.name for p in (tmp_path / "cut").iterdir()} >= {"checkpoint.old", "checkpoint.tmp"}
    assert run(tmp_path / "cut", "--resume") == 0
    a, b = load_file(str(tmp_path / "full" / "model.safetensors")), load_file(str(tmp_path / "cut" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_an_unfinished_first_save_restarts_with_a_warning(tmp_path, reference):
    out = tmp_path / "run"
    (out / "checkpoint.tmp").mkdir(parents=True)
    (out / "checkpoint.tmp" / "model.safetensors").write_bytes(b"\x00" * 10)
    with pytest.warns(UserWarning, match="first checkpoint save into .* never finished; starting at step 0"):
        train(_cfg(out, resume=True))
    got = load_file(str(out / "model.safetensors"))
    assert all(torch.equal(got[k], reference[0][k]) for k in reference[0])
