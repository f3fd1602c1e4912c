"""The run directory: checked before any work is done, written atomically, errors explained.

A run that cannot write its checkpoints should fail in the first second, not after an
hour of training; a write that fails later (disk full, quota, a read-only mount) stops
the run with a message naming the path and the fix, and the files already there — the
previous checkpoints and results — are left as they were.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import json
import os
import re
import socket
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

from cifar_jax.errors import CifarJaxError

_REASONS = {
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is exceeded",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
    errno.EFBIG: "the file is larger than allowed (ulimit -f or file system limit)",
}


class WorkdirError(CifarJaxError):
    """The workdir cannot be created or written."""


def _reason(error: OSError) -> str:
    return _REASONS.get(error.errno, error.strerror or type(error).__name__)


def prepare(workdir: str) -> str:
    """Creates ``workdir`` if needed and proves it is writable; returns its absolute path."""
    if not workdir:
        raise WorkdirError("no --workdir given; pass --workdir=DIR for checkpoints and results.")
    path = os.path.abspath(workdir)
    try:
        os.makedirs(path, exist_ok=True)
        probe = os.path.join(path, f".write-test-{os.getpid()}")
        with open(probe, "w", encoding="utf-8") as f:
            f.write("ok")
        os.remove(probe)
    except OSError as e:
        raise WorkdirError(
            f"cannot write to the workdir {path}: {_reason(e)} ({e}). Choose a writable "
            "--workdir, or fix the folder's permissions / free some space."
        ) from e
    return path


_OS_ERROR_CODE = re.compile(r"os_error_code='?(\d+)")


def _storage_errno(error: BaseException) -> int | None:
    """The errno behind an OSError, or behind the ValueError TensorStore (Orbax) raises."""
    if isinstance(error, OSError):
        return error.errno
    match = _OS_ERROR_CODE.search(str(error))
    return int(match.group(1)) if match else None


@contextlib.contextmanager
def write_errors(what: str, path: str, kept: str = "") -> Iterator[None]:
    """Turns a failed write of ``what`` (disk full, quota, permissions) into a WorkdirError."""
    try:
        yield
    except (OSError, ValueError, RuntimeError) as e:
        code = _storage_errno(e)
        if code is None:
            raise
        reason = _REASONS.get(code, os.strerror(code))
        raise WorkdirError(
            f"could not write {what} to {path}: {reason} (errno {code}). "
            + (f"{kept} " if kept else "")
            + "Free some space or choose another --workdir, then rerun the same command to "
            "resume."
        ) from e


def write_bytes_atomic(path: str, data: bytes) -> None:
    """Writes ``data`` to a temporary file and renames it, so a reader never sees half a
    file."""
    tmp = f"{path}.tmp.{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def write_json_atomic(path: str, obj: Any) -> None:
    """Writes JSON atomically (:func:`write_bytes_atomic`)."""
    write_bytes_atomic(path, json.dumps(obj, indent=2, default=str).encode("utf-8"))


def read_json_object(path: str, fix: str) -> dict[str, Any]:
    """The JSON object in ``path``; a CifarJaxError naming the file and ``fix`` (what to do)
    if it cannot be read or is not an object."""
    try:
        with open(path, encoding="utf-8") as f:
            values = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise CifarJaxError(f"cannot read {path}: {e}. {fix}") from e
    if not isinstance(values, dict):
        raise CifarJaxError(f"{path} does not hold a JSON object. {fix}")
    return values


# ------------------------------------------------------------------ one writer per workdir

LOCK_NAME = ".cifar_jax.lock"
HEARTBEAT_SECONDS = 30.0  # the holder touches its lock this often
STALE_SECONDS = 300.0  # a lock from another host untouched this long is taken over


class WorkdirInUseError(WorkdirError):
    """Another live process holds the workdir."""


def _process_start(pid: int) -> str | None:
    """The start time of ``pid`` (Linux ``/proc``), to tell a reused pid from the holder."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _pid_alive(pid: int, started: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, owned by another user
    now = _process_start(pid)
    return started is None or now is None or now == started


class WorkdirLock:
    """Keeps a second run (a job started twice, a command rerun in another terminal) out
    of a workdir a live run is writing, so two writers never rotate the same checkpoints.

    The lock is a file, ``<workdir>/.cifar_jax.lock``, created with ``O_CREAT | O_EXCL``
    (atomic on local file systems and NFSv3+), holding the holder's host, pid, start time
    and command. ``fcntl``/``flock`` locks are not used: on NFS and cluster file systems
    they are often not shared between hosts, or vanish with a client. A lock is stale, and
    taken over with a warning, when its holder is gone: on the same host its pid no longer
    runs (or was reused by another process); from another host, its holder has not touched
    the file (a heartbeat every 30 s) for 5 minutes, as after ``kill -9`` or a crashed
    machine. In a multi-process run only process 0 holds it.
    """

    def __init__(
        self,
        workdir: str,
        *,
        what: str = "run",
        stale_seconds: float = STALE_SECONDS,
        heartbeat_seconds: float = HEARTBEAT_SECONDS,
    ):
        self.path = os.path.join(workdir, LOCK_NAME)
        self.what = what
        self.stale_seconds = stale_seconds
        self.heartbeat_seconds = heartbeat_seconds
        self.warning = ""  # set when a stale lock was taken over
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._token = ""

    def _read(self) -> dict[str, Any] | None:
        try:
            with open(self.path, encoding="utf-8") as f:
                return json.load(f)
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {}  # being written, or damaged

    def _stale_reason(self, holder: dict[str, Any]) -> str:
        """Why the lock's holder is gone ('' while it may be alive)."""
        try:
            age = time.time() - os.stat(self.path).st_mtime
        except FileNotFoundError:
            return "it was just released"
        if holder.get("host") == socket.gethostname() and isinstance(holder.get("pid"), int):
            if not _pid_alive(holder["pid"], holder.get("process_start")):
                return f"process {holder['pid']} on this host is no longer running"
            return ""
        if age > self.stale_seconds:
            return f"it has not been refreshed for {age:.0f} s (its holder died or lost the host)"
        return ""

    def acquire(self) -> WorkdirLock:
        self._token = f"{socket.gethostname()}:{os.getpid()}:{time.time_ns()}"
        mine = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "process_start": _process_start(os.getpid()),
            "started": datetime.datetime.now().isoformat(timespec="seconds"),
            "command": " ".join(sys.argv),
            "what": self.what,
            "token": self._token,
        }
        for _ in range(50):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self._read()
                if holder is None:
                    continue  # released between the two calls: try again
                if not holder:  # half-written by a process starting right now
                    time.sleep(0.1)
                    holder = self._read() or {}
                reason = self._stale_reason(holder) if holder else ""
                if not reason and not holder:
                    try:
                        age = time.time() - os.stat(self.path).st_mtime
                    except FileNotFoundError:
                        continue
                    reason = f"it is unreadable and {age:.0f} s old" if age > 5 else ""
                if not reason:
                    raise WorkdirInUseError(self._in_use_message(holder)) from None
                # Rename, not remove: of two processes taking over the same stale lock only
                # one rename succeeds; the other finds no file and tries to create it again.
                if holder and self._read() != holder:
                    continue  # someone else took it over meanwhile: look again
                with contextlib.suppress(FileNotFoundError):
                    os.replace(self.path, f"{self.path}.stale.{os.getpid()}")
                    with contextlib.suppress(OSError):
                        os.remove(f"{self.path}.stale.{os.getpid()}")
                    self.warning = (
                        f"warning: took over the lock of {self.path} held by "
                        f"{_describe(holder)}: {reason}."
                    )
                continue
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(mine, f, indent=2)
            self._thread = threading.Thread(target=self._heartbeat, daemon=True)
            self._thread.start()
            return self
        raise WorkdirInUseError(f"could not take the lock {self.path}: it keeps changing hands.")

    def _in_use_message(self, holder: dict[str, Any]) -> str:
        return (
            f"the workdir {os.path.dirname(self.path)} is in use by {_describe(holder)}. "
            "Two runs writing one workdir would overwrite each other's checkpoints. Wait for "
            "that run to finish (or stop it), or pass another --workdir. If that process is "
            f"really gone, delete {self.path}; a lock whose process is dead on this host, or "
            f"untouched for {self.stale_seconds:.0f} s from another host, is taken over "
            "automatically."
        )

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.heartbeat_seconds):
            with contextlib.suppress(OSError):
                os.utime(self.path)

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        holder = self._read()
        if holder and holder.get("token") == self._token:
            with contextlib.suppress(OSError):
                os.remove(self.path)

    def __enter__(self) -> WorkdirLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _describe(holder: dict[str, Any]) -> str:
    if not holder:
        return "a process that is starting (its lock file is being written)"
    return (
        f"{holder.get('what', 'a run')} pid {holder.get('pid')} on host {holder.get('host')}, "
        f"started {holder.get('started')} ({holder.get('command', '?')})"
    )
