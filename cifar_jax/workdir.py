"""The run directory: checked before any work is done, written atomically, errors explained.

A run that cannot write its checkpoints should fail in the first second, not after an
hour of training; a write that fails later (disk full, quota, a read-only mount) stops
the run with a message naming the path and the fix, and the files already there — the
previous checkpoints and results — are left as they were.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
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


def write_json_atomic(path: str, obj: Any) -> None:
    """Writes JSON to a temporary file and renames it, so a reader never sees half a file."""
    tmp = f"{path}.tmp.{os.getpid()}"
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=2, default=str)
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise
