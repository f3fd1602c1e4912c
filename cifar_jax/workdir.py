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
import hashlib
import json
import os
import re
import socket
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

from cifar_jax import holds
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
HEARTBEAT_SECONDS = 30.0  # the holder touches its lock this often, checking it is still its own
STALE_SECONDS = 300.0  # a lock whose holder cannot be checked, untouched this long, is stale
TORN_SECONDS = 10.0  # an unreadable (empty, half-written) lock older than this is stale
CLAIM_SECONDS = 60.0  # a takeover takes milliseconds: a claim this old was abandoned


class WorkdirInUseError(WorkdirError):
    """Another live process holds the workdir."""


class WorkdirLockLostError(WorkdirError):
    """The run's lock was taken by another process while it ran: it must stop writing."""


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


def _pid_space() -> str | None:
    """This boot and pid namespace ('' parts where unknown): two processes can judge each
    other's pids only when both agree. Containers on one host name have their own pid
    namespaces, where the holder's pid means another process (or none)."""
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="utf-8") as f:
            boot = f.read().strip()
        return f"{boot}/{os.readlink('/proc/self/ns/pid')}"
    except OSError:
        return None


class WorkdirLock:
    """Keeps a second run (a job started twice, a command rerun in another terminal) out
    of a workdir a live run is writing, so two writers never rotate the same checkpoints.

    The lock is the file ``<workdir>/.cifar_jax.lock``, holding the holder's host, pid,
    process start time, pid namespace, command and a unique token. In a multi-process run
    only process 0 holds it.

    Why these mechanisms (the workdir may be a local disk, NFS or a cluster file system):

    - **Created whole, atomically**: the content is written to a uniquely named file that
      is then ``link``-ed to the lock's name. ``link`` fails if the name exists, on local
      file systems and on NFS alike (the classic NFS-safe lock), so a lock file is never
      seen empty or half-written. ``fcntl``/``flock`` locks are not used: on NFS and
      cluster file systems they are often not shared between hosts, or vanish with a
      client, and they cannot say *who* holds a workdir.
    - **Stale** when its holder is gone: on the same host, in the same boot and pid
      namespace, its pid no longer runs (or was reused); otherwise, when it has not been
      touched for ``stale_seconds`` (the holder touches it every ``heartbeat_seconds``).
      Age is measured on the file system's clock (a probe file's modification time), never
      this host's ``time.time()``, since a file server's clock may differ from ours. An
      unreadable lock (damaged by hand, or left by a file system without ``link``) is stale
      once ``TORN_SECONDS`` old.
    - **Taken over atomically**: of the processes that judged one stale lock, only the one
      that creates ``<lock>.takeover.<digest of that lock's bytes>`` (``O_EXCL``) may take
      it: it checks the lock still holds those bytes, renames it aside, checks the renamed
      file is the one judged, and links its own. The others find the claim, look again and
      see a live lock. A claim older than ``CLAIM_SECONDS`` (its taker died mid-way) is
      followed by the next numbered claim.
    - **Lost locks are noticed**: every heartbeat reads the lock and checks the token is
      still ours (:attr:`lost` then says why), and :meth:`verify` does so at once; the
      training loop verifies before every checkpoint and results write, so a run whose lock
      was taken stops without writing again (:class:`WorkdirLockLostError`).
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
        self.lost = ""  # set (with the reason) once the lock is no longer ours
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._token = ""
        self._held = False
        self._unreadable_since: float | None = None

    # -------------------------------------------------------------- reading the lock

    def _read_bytes(self, path: str | None = None) -> bytes | None:
        try:
            with open(path or self.path, "rb") as f:
                return f.read()
        except FileNotFoundError:
            return None

    @staticmethod
    def _parse(raw: bytes) -> dict[str, Any]:
        """The holder described by a lock file's bytes; {} if they are not a lock."""
        try:
            holder = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            return {}
        if not isinstance(holder, dict) or not ("token" in holder or "pid" in holder):
            return {}
        return holder

    def _fs_age(self, path: str) -> float | None:
        """Seconds since ``path`` was last modified, on the file system's own clock."""
        probe = f"{self.path}.clock.{os.getpid()}.{threading.get_ident()}"
        try:
            with open(probe, "w") as f:
                now = os.fstat(f.fileno()).st_mtime
            return now - os.stat(path).st_mtime
        except FileNotFoundError:
            return None
        finally:
            with contextlib.suppress(OSError):
                os.remove(probe)

    def _stale_reason(self, holder: dict[str, Any], age: float) -> str:
        """Why the lock's holder is gone ('' while it may be alive)."""
        if not holder:
            if age > TORN_SECONDS:
                return f"it is unreadable (empty or damaged) and {age:.0f} s old"
            return ""
        space = _pid_space()
        same_space = (
            holder.get("host") == socket.gethostname()
            and space is not None
            and holder.get("pid_space") == space
            and isinstance(holder.get("pid"), int)
        )
        if same_space:
            if not _pid_alive(holder["pid"], holder.get("process_start")):
                return f"process {holder['pid']} on this host is no longer running"
            return ""
        if age > self.stale_seconds:
            return f"it has not been refreshed for {age:.0f} s (its holder died or lost the host)"
        return ""

    # -------------------------------------------------------------- taking the lock

    def _create(self, content: bytes) -> bool:
        """Creates the lock with ``content`` if there is none; False if there is one."""
        tmp = f"{self.path}.new.{os.getpid()}.{time.time_ns()}"
        with open(tmp, "wb") as f:
            f.write(content)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, self.path)
            return True
        except FileExistsError:
            return False
        except OSError as e:  # a file system without hard links: create-exclusive instead
            if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
                raise
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                return False
            with os.fdopen(fd, "wb") as f:
                f.write(content)
            return True
        finally:
            with contextlib.suppress(OSError):
                os.remove(tmp)

    def _claim(self, judged: bytes) -> str | None:
        """The takeover claim for the lock ``judged``, if this process gets it."""
        digest = hashlib.sha256(judged).hexdigest()[:16]
        for n in range(100):
            claim = f"{self.path}.takeover.{digest}.{n}"
            try:
                fd = os.open(claim, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                age = self._fs_age(claim)
                if age is None or age <= CLAIM_SECONDS:
                    return None  # another process is taking it over right now (or just did)
                continue  # abandoned by a taker that died: the next claim decides
            with os.fdopen(fd, "w") as f:
                f.write(self._token)
            return claim
        return None

    def _take_over(self, judged: bytes, content: bytes) -> bool:
        """Replaces the stale lock ``judged`` by ours; False if another process won."""
        claim = self._claim(judged)
        if claim is None:
            return False
        aside = f"{self.path}.stale.{os.getpid()}.{time.time_ns()}"
        try:
            if self._read_bytes() != judged:
                return False  # released or replaced since it was judged: look again
            try:
                os.rename(self.path, aside)
            except FileNotFoundError:
                return False
            if self._read_bytes(aside) != judged:
                # Between the check and the rename its holder released it and a new run
                # created its own: put that one back (link: only if the name is free).
                with contextlib.suppress(OSError):
                    os.link(aside, self.path)
                return False
            return self._create(content)
        finally:
            for path in (aside, claim):
                with contextlib.suppress(OSError):
                    os.remove(path)

    def acquire(self) -> WorkdirLock:
        self._token = f"{socket.gethostname()}:{os.getpid()}:{time.time_ns()}"
        mine = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "process_start": _process_start(os.getpid()),
            "pid_space": _pid_space(),
            "started": datetime.datetime.now().isoformat(timespec="seconds"),
            "command": " ".join(sys.argv),
            "what": self.what,
            "token": self._token,
        }
        content = json.dumps(mine, indent=2).encode("utf-8")
        holder: dict[str, Any] = {}
        for _ in range(200):
            if self._create(content):
                break
            raw = self._read_bytes()
            age = self._fs_age(self.path) if raw is not None else None
            if raw is None or age is None:
                continue  # released between the two calls: try again
            holder = self._parse(raw)
            reason = self._stale_reason(holder, age)
            if not reason:
                if holder:
                    raise WorkdirInUseError(self._in_use_message(holder))
                time.sleep(0.05)  # unreadable and young: a lock being written by hand?
                continue
            holds.hold("lock_read")  # tests: every racer has judged the same stale lock
            if self._take_over(raw, content):
                self.warning = (
                    f"warning: took over the lock of {self.path} held by "
                    f"{_describe(holder)}: {reason}."
                )
                break
            time.sleep(0.01)  # another process is taking it over: look again
        else:
            raise WorkdirInUseError(
                self._in_use_message(holder)
                if holder
                else f"could not take the lock {self.path}: it keeps changing hands, or it "
                "is unreadable and new. Look at that file; delete it if no run uses the "
                "workdir."
            )
        self._held = True
        self._thread = threading.Thread(target=self._heartbeat, daemon=True)
        self._thread.start()
        return self

    def _in_use_message(self, holder: dict[str, Any]) -> str:
        return (
            f"the workdir {os.path.dirname(self.path)} is in use by {_describe(holder)}. "
            "Two runs writing one workdir would overwrite each other's checkpoints. Wait for "
            "that run to finish (or stop it), or pass another --workdir. If that process is "
            f"really gone, delete {self.path}; a lock whose process is dead on this host, or "
            f"untouched for {self.stale_seconds:.0f} s from another host, is taken over "
            "automatically."
        )

    # -------------------------------------------------------------- holding the lock

    def _check_token(self) -> str:
        """'' while the lock file is ours; else why not."""
        try:
            raw = self._read_bytes()
        except OSError as e:
            return f"it could not be read ({e})"
        if raw is None:
            return "its file was removed"
        holder = self._parse(raw)
        if holder.get("token") != self._token:
            return f"it now belongs to {_describe(holder)}"
        return ""

    def verify(self) -> None:
        """Raises :class:`WorkdirLockLostError` unless the lock is still ours (checked now)."""
        if not self._held:
            return
        if not self.lost:
            self.lost = self._check_token()
        if self.lost:
            raise WorkdirLockLostError(self.lost_message())

    def lost_message(self) -> str:
        return (
            f"this run lost its lock on {os.path.dirname(self.path)}: {self.lost}. Another "
            "process took the workdir over, so this run stops without writing another "
            "checkpoint or result. Check which run should own the workdir; rerun this one "
            "with another --workdir if both are wanted."
        )

    def beat(self) -> bool:
        """One heartbeat: checks the lock is still ours and touches it; False once lost.

        A read that fails (a file server's hiccup) is retried at the next beat, for up to
        half of ``stale_seconds``; after that the lock may look stale to others, so it
        counts as lost."""
        reason = self._check_token()
        if reason.startswith("it could not be read"):
            self._unreadable_since = self._unreadable_since or time.monotonic()
            if time.monotonic() - self._unreadable_since < self.stale_seconds / 2:
                return True
        if reason:
            self.lost = reason
            return False
        self._unreadable_since = None
        with contextlib.suppress(OSError):
            os.utime(self.path)  # the file system's clock: what others judge age by
        return True

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.heartbeat_seconds):
            if not self.beat():
                return

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._held and not self._check_token():
            with contextlib.suppress(OSError):
                os.remove(self.path)
        self._held = False

    def __enter__(self) -> WorkdirLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _describe(holder: dict[str, Any]) -> str:
    if not holder:
        return "a process whose lock file cannot be read (empty or damaged)"
    return (
        f"{holder.get('what', 'a run')} pid {holder.get('pid')} on host {holder.get('host')}, "
        f"started {holder.get('started')} ({holder.get('command', '?')})"
    )
