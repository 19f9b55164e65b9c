"""freqkit.io: atomic writes leave the old file or the new one; the run lock refuses a live owner and takes over a dead one."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from freqkit.errors import FreqkitError
from freqkit.io import (
    RunLock,
    atomic_save_safetensors,
    atomic_write_json,
    atomic_write_text,
    check_writable_dir,
    check_writable_file,
    dumps,
    read_json,
)

ROOT = hasattr(os, "geteuid") and os.geteuid() == 0  # root writes into read-only folders


def test_atomic_writes_round_trip_and_leave_no_temp_files(tmp_path):
    atomic_write_text(tmp_path / "a.txt", "old")
    atomic_write_text(tmp_path / "a.txt", "new")
    atomic_write_json(tmp_path / "b.json", {"x": [1, 2]})
    t = {"w": torch.arange(6.0).view(2, 3)}
    atomic_save_safetensors(t, tmp_path / "c.safetensors", metadata={"k": "v"})
    assert (tmp_path / "a.txt").read_text() == "new"
    assert read_json(tmp_path / "b.json") == {"x": [1, 2]}
    assert torch.equal(load_file(str(tmp_path / "c.safetensors"))["w"], t["w"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.json", "c.safetensors"]


def test_a_failed_write_keeps_the_old_file(tmp_path):
    atomic_write_json(tmp_path / "m.json", {"ok": 1})
    with pytest.raises(TypeError):
        atomic_write_json(tmp_path / "m.json", {"bad": object()})  # fails while serializing
    assert read_json(tmp_path / "m.json") == {"ok": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]


def test_a_process_killed_before_the_rename_leaves_the_old_file(tmp_path):
    atomic_write_text(tmp_path / "f.txt", "old")
    code = "from freqkit.io import atomic_write_text; atomic_write_text(r'%s', 'new' * 1000)" % (tmp_path / "f.txt")
    env = {**os.environ, "FREQKIT_FAULT_AT": f"before_replace:{tmp_path.name}/f.txt", "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run([sys.executable, "-c", code], env=env, timeout=120)
    assert proc.returncode == 86
    assert (tmp_path / "f.txt").read_text() == "old"


def test_read_json_names_a_damaged_file(tmp_path):
    (tmp_path / "c.json").write_text('{"model": ')
    with pytest.raises(FreqkitError, match=r"c\.json is not valid JSON"):
        read_json(tmp_path / "c.json", "training config")


def test_check_writable_dir_refuses_a_file_and_a_read_only_folder(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(FreqkitError, match=r"^out .*is a file, not a folder"):
        check_writable_dir(tmp_path / "f", "out")
    with pytest.raises(FreqkitError, match=r"not a writable folder"):
        check_writable_dir(tmp_path / "f" / "sub", "out")
    assert check_writable_dir(tmp_path / "new" / "deep").is_dir()
    with pytest.raises(FreqkitError, match=r"^json .*is a folder"):
        check_writable_file(tmp_path, "json")
    if not ROOT:
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        try:
            with pytest.raises(FreqkitError, match=r"^out .*is not a writable folder"):
                check_writable_dir(ro, "out")
        finally:
            ro.chmod(0o700)


@pytest.mark.skipif(sys.platform == "win32", reason="fcntl locks")
def test_run_lock_refuses_a_live_owner_and_takes_over_a_dead_one(tmp_path):
    with RunLock(tmp_path, "out"):
        text = (tmp_path / ".freqkit.lock").read_text()
        assert f"pid {os.getpid()}" in text
        with pytest.raises(FreqkitError, match=rf"^out .* is in use by another freqkit run \(pid {os.getpid()}"):
            RunLock(tmp_path, "out").acquire()
    assert not (tmp_path / ".freqkit.lock").exists()
    # a lock file left by a process that died (pid of a finished child, no OS lock held) is taken over
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True).stdout.strip()
    (tmp_path / ".freqkit.lock").write_text(f"pid {dead} on somewhere\n")
    with RunLock(tmp_path):
        assert f"pid {os.getpid()}" in (tmp_path / ".freqkit.lock").read_text()


@pytest.mark.skipif(sys.platform == "win32", reason="fcntl locks")
def test_run_lock_held_by_another_process(tmp_path):
    code = (
        "import sys, time; from freqkit.io import RunLock; l = RunLock(sys.argv[1]).acquire(); "
        "print('held', flush=True); sys.stdin.readline()"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    child = subprocess.Popen(
        [sys.executable, "-c", code, str(tmp_path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert child.stdout.readline().strip() == "held"
        with pytest.raises(FreqkitError, match=rf"in use by another freqkit run \(pid {child.pid}"):
            RunLock(tmp_path).acquire()
        child.kill()  # dies holding the lock: the OS releases it
        child.wait(60)
        with RunLock(tmp_path):
            pass
    finally:
        if child.poll() is None:
            child.kill()


def test_atomic_files_get_the_usual_permissions(tmp_path):
    """Atomic writes go through a private temp file; the result must still be readable like any other file."""
    from freqkit.io import atomic_write_text

    old = os.umask(0o022)
    try:
        path = atomic_write_text(tmp_path / "r.json", "{}")
    finally:
        os.umask(old)
    assert (path.stat().st_mode & 0o777) == 0o644


def test_dumps_is_json_with_number_lists_on_one_line():
    obj = {
        "spectrum": [[0.5, -1.0, float("nan")], [float("inf"), 2, 3]],
        "flags": [True, False],
        "names": ["a", "b"],
        "empty": [],
        "nested": {"t": (1.5, 2.5), "mixed": ["x", 1, [4.0]]},
    }
    text = dumps(obj)
    # json's own reading of the same object: dumps changes the layout only
    assert json.dumps(json.loads(text), sort_keys=True) == json.dumps(json.loads(json.dumps(obj)), sort_keys=True)
    lines = text.splitlines()
    assert ' "spectrum": [[0.5, -1.0, NaN], [Infinity, 2, 3]],' in lines  # a matrix of numbers: one line
    assert ' "empty": [],' in lines and '  "t": [1.5, 2.5],' in lines and "   [4.0]" in lines
    assert "  true," in lines  # booleans are not numbers: one per line, as json.dumps(indent=1) writes them
    assert dumps(obj, indent=None) == json.dumps(obj)
