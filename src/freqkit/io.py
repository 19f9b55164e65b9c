"""File safety: atomic writes, a run-folder lock and an early writability check.

Every file freqkit writes goes through :func:`atomic_write_bytes` (or its text / JSON / safetensors
forms): the bytes land in a temporary file in the same folder, are flushed to disk (fsync), and
replace the target with ``os.replace``, which is atomic on POSIX and Windows. A reader, or a run
killed at any instant, sees either the old file or the new one, never a truncated mix.

:class:`RunLock` keeps two runs out of one output folder: it holds an OS lock (``fcntl.flock``) on
``<folder>/.freqkit.lock`` and writes its pid there. The OS drops the lock when its owner dies, so a
lock left behind by a killed run is taken over; a live owner is named in the error.

``FREQKIT_FAULT_AT=<point>`` (tests only) ends the process with ``os._exit`` at that named point of a
save, to prove that a kill there loses nothing; see :func:`fault_point`.
"""

from __future__ import annotations

import json
import os
import socket
import tempfile
from pathlib import Path
from typing import Any, Mapping, Optional

from freqkit.errors import FreqkitError, ParameterError
from freqkit.limits import loads_json

__all__ = [
    "FAULT_EXIT_CODE",
    "RunLock",
    "atomic_save_safetensors",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "check_writable_dir",
    "check_writable_file",
    "read_json",
    "fault_point",
    "fsync_dir",
]

FAULT_EXIT_CODE = 86
LOCK_NAME = ".freqkit.lock"


def fault_point(name: str) -> None:
    """End the process at once (no cleanup, like ``kill -9``) when ``FREQKIT_FAULT_AT`` equals ``name``."""
    if os.environ.get("FREQKIT_FAULT_AT") == name:
        os._exit(FAULT_EXIT_CODE)


def fsync_dir(folder: str | os.PathLike) -> None:
    """Flush a folder's entries (a rename inside it) to disk; a no-op where folders cannot be opened (Windows)."""
    try:
        fd = os.open(str(folder), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _os_error(path: Path, err: OSError) -> FreqkitError:
    return FreqkitError(f"cannot write {path} ({err.strerror or err}); check that its folder exists and is writable")


def _umask() -> int:
    """The process umask (read by setting and restoring it: there is no read-only call)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temp file in the same folder, fsync, os.replace); return the path."""
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as err:
        raise _os_error(path, err) from None
    try:
        # mkstemp makes the file private (0600); the result should read like any file the user writes
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        fault_point(f"before_replace:{path.parent.name}/{path.name}")
        os.replace(tmp, path)
    except BaseException as err:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(err, OSError):
            raise _os_error(path, err) from None
        raise
    fsync_dir(path.parent)
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """:func:`atomic_write_bytes` of UTF-8 text."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def dumps(obj: Any, indent: Optional[int] = 1, allow_nan: bool = True) -> str:
    """``json.dumps`` with ``indent`` for the structure, but each list of numbers, or of lists of numbers, on one line.

    One value per line makes a report with a few images or spectra hundreds of thousands of lines long,
    and an indent also sends every value through json's pure-Python encoder; numeric arrays written
    compactly are shorter to read and go through its C encoder. A list counts as numeric by its first
    element (a number, or a list that starts with one); any list is valid JSON either way.
    """
    if indent is None:
        return json.dumps(obj, allow_nan=allow_nan)

    def encode(x: Any, level: int) -> str:
        if isinstance(x, dict):
            # json writes a non-string key (1, 1.5, True, None) as the string of its JSON text
            items = [f"{json.dumps(k if isinstance(k, str) else json.dumps(k))}: {encode(v, level + 1)}" for k, v in x.items()]
            return _block("{", items, "}", level, indent)
        if isinstance(x, (list, tuple)):
            if _numeric(x) or (x and isinstance(x[0], (list, tuple)) and _numeric(x[0])):
                return json.dumps(x, allow_nan=allow_nan)
            return _block("[", [encode(v, level + 1) for v in x], "]", level, indent)
        return json.dumps(x, allow_nan=allow_nan)

    return encode(obj, 0)


def _numeric(x: Any) -> bool:
    """A non-empty list or tuple whose first element is an int or a float (not a bool)."""
    return isinstance(x, (list, tuple)) and len(x) > 0 and type(x[0]) in (float, int)


def _block(open_: str, items: list[str], close: str, level: int, indent: int) -> str:
    """``items`` between brackets, one per line at ``level + 1``, as json.dumps(indent=...) lays them out."""
    if not items:
        return open_ + close
    pad = "\n" + " " * (indent * (level + 1))
    return open_ + pad + ("," + pad).join(items) + "\n" + " " * (indent * level) + close


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: Optional[int] = 1) -> Path:
    """:func:`atomic_write_bytes` of ``obj`` as JSON (serialized first, so a bad value leaves the file untouched)."""
    return atomic_write_text(path, dumps(obj, indent=indent) + "\n")


def json_text(obj: Any, path: str | os.PathLike | None = None, indent: Optional[int] = 1) -> str:
    """``obj`` as JSON text; with ``path`` also written there atomically (the ``to_json(path=None)`` of every result object)."""
    text = dumps(obj, indent=indent)
    if path is not None:
        atomic_write_text(path, text + "\n")
    return text


def atomic_save_safetensors(
    tensors: Mapping[str, Any], path: str | os.PathLike, metadata: Optional[dict[str, str]] = None
) -> Path:
    """Write a dict of (CPU, contiguous) tensors as a safetensors file, atomically."""
    from safetensors.torch import save

    return atomic_write_bytes(path, save(dict(tensors), metadata=metadata))


def check_writable_dir(path: str | os.PathLike, parameter: str = "out") -> Path:
    """Create ``path`` if needed and prove a file can be written in it; else one FreqkitError naming ``parameter``.

    Call it before long work, so that a read-only or mistyped output folder fails in the first second.
    """
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise ParameterError(parameter, f"{str(p)!r} is a file, not a folder; pass a folder path")
    try:
        p.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".freqkit-write-check.", dir=p)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise ParameterError(
            parameter, f"{str(p)!r} is not a writable folder ({err.strerror or err}); pass a folder you can write to"
        ) from None
    return p


def check_writable_file(path: str | os.PathLike, parameter: str = "path") -> Path:
    """Prove that ``path`` can be written later (not a folder; its folder exists or can be made, and is writable)."""
    p = Path(path)
    if p.is_dir():
        raise ParameterError(parameter, f"{str(p)!r} is a folder; pass a file path")
    check_writable_dir(p.parent if str(p.parent) else Path("."), parameter)
    if p.exists() and not os.access(p, os.W_OK):
        raise ParameterError(parameter, f"{str(p)!r} exists and is read-only; pass another file path")
    return p


def read_json(path: str | os.PathLike, what: str = "file") -> Any:
    """Parse a JSON file; a missing, unreadable or malformed one raises one FreqkitError naming it."""
    p = Path(path)
    try:
        return loads_json(p.read_text(), f"{what} {p}")
    except FileNotFoundError:
        raise FreqkitError(f"{what} {p} does not exist") from None
    except (OSError, UnicodeDecodeError) as err:
        raise FreqkitError(f"cannot read {what} {p} ({err}); check the file") from None
    except ValueError as err:
        raise FreqkitError(f"{what} {p} is not valid JSON ({err}); it is damaged: restore or re-create it") from None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    except OSError:
        return False
    return True


class RunLock:
    """Exclusive use of an output folder by one process: ``with RunLock(out): ...``.

    The lock file ``<folder>/.freqkit.lock`` holds the owner's host and pid. Where ``fcntl`` exists the
    OS lock decides (released by the OS when the owner dies, however it dies); elsewhere a lock whose
    pid is no longer running on this host is taken over.
    """

    def __init__(self, folder: str | os.PathLike, parameter: str = "out") -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self.parameter = parameter
        self._fd: Optional[int] = None

    def _owner(self) -> str:
        try:
            return self.path.read_text().strip() or "unknown"
        except OSError:
            return "unknown"

    def _refuse(self) -> FreqkitError:
        return ParameterError(
            self.parameter,
            f"{str(self.folder)!r} is in use by another freqkit run ({self._owner()}); wait for it to finish or use another output folder",
        )

    def acquire(self) -> "RunLock":
        """Take the lock or raise a FreqkitError naming the run that holds it."""
        check_writable_dir(self.folder, self.parameter)
        me = f"pid {os.getpid()} on {socket.gethostname()}"
        try:
            import fcntl
        except ImportError:  # Windows: pid file only
            fcntl = None
        for _ in range(10):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            if fcntl is None:
                break
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                raise self._refuse() from None
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except OSError:
                same = False
            if same:
                break
            os.close(fd)  # the previous owner removed the file we locked: lock the new one
        else:
            raise self._refuse()
        try:
            if fcntl is None:
                owner = self._owner()
                parts = owner.split()
                if len(parts) >= 4 and parts[0] == "pid" and parts[3] == socket.gethostname() and parts[1].isdigit():
                    if int(parts[1]) != os.getpid() and _pid_alive(int(parts[1])):
                        raise self._refuse()
            os.ftruncate(fd, 0)
            os.write(fd, (me + "\n").encode())
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        return self

    def release(self) -> None:
        """Drop the lock and remove the lock file."""
        if self._fd is None:
            return
        try:
            # unlink while still holding the lock, so a waiting run never takes a file about to vanish
            self.path.unlink()
        except OSError:
            pass
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
