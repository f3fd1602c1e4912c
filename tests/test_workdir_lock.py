"""One writer per workdir: the lock file, its staleness rules and its heartbeat."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time

import pytest

from cifar_jax import workdir as workdir_lib
from cifar_jax.workdir import LOCK_NAME, WorkdirInUseError, WorkdirLock


def write_lock(folder, **holder) -> None:
    (folder / LOCK_NAME).write_text(json.dumps(holder))


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_a_held_workdir_is_refused_with_the_holder_named(tmp_path):
    with WorkdirLock(str(tmp_path), what="sweep"):
        holder = json.loads((tmp_path / LOCK_NAME).read_text())
        assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
        with pytest.raises(WorkdirInUseError) as e:
            WorkdirLock(str(tmp_path)).acquire()
        message = str(e.value)
        assert f"sweep pid {os.getpid()} on host {socket.gethostname()}" in message
        assert f"started {holder['started']}" in message and "another --workdir" in message
    assert not (tmp_path / LOCK_NAME).exists()  # released
    WorkdirLock(str(tmp_path)).acquire().release()  # and free again


def test_lock_of_a_dead_process_on_this_host_is_taken_over(tmp_path):
    pid = dead_pid()
    write_lock(tmp_path, host=socket.gethostname(), pid=pid, started="then", what="run")
    lock = WorkdirLock(str(tmp_path)).acquire()
    try:
        assert f"process {pid} on this host is no longer running" in lock.warning
        assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == os.getpid()
    finally:
        lock.release()


def test_a_reused_pid_does_not_keep_a_stale_lock(tmp_path):
    """The pid lives (it is ours) but was started at another time: not the holder."""
    write_lock(tmp_path, host=socket.gethostname(), pid=os.getpid(), process_start="1")
    if workdir_lib._process_start(os.getpid()) is None:
        pytest.skip("no /proc on this system")
    lock = WorkdirLock(str(tmp_path)).acquire()
    assert "no longer running" in lock.warning
    lock.release()


def test_lock_from_another_host_is_kept_while_fresh_and_taken_when_silent(tmp_path):
    write_lock(tmp_path, host="elsewhere", pid=1, started="x")
    with pytest.raises(WorkdirInUseError, match="pid 1 on host elsewhere"):
        WorkdirLock(str(tmp_path), stale_seconds=60).acquire()
    old = time.time() - 120
    os.utime(tmp_path / LOCK_NAME, (old, old))
    lock = WorkdirLock(str(tmp_path), stale_seconds=60).acquire()
    assert "has not been refreshed" in lock.warning
    lock.release()


def test_the_holder_refreshes_its_lock(tmp_path):
    with WorkdirLock(str(tmp_path), heartbeat_seconds=0.05):
        path = tmp_path / LOCK_NAME
        old = time.time() - 1000
        os.utime(path, (old, old))
        time.sleep(0.5)
        assert time.time() - path.stat().st_mtime < 100


def test_release_does_not_remove_a_lock_taken_over_by_another(tmp_path):
    lock = WorkdirLock(str(tmp_path)).acquire()
    write_lock(tmp_path, host="elsewhere", pid=2, token="theirs")
    lock.release()
    assert (tmp_path / LOCK_NAME).exists()
