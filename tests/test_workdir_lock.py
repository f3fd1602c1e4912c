"""One writer per workdir: the lock file, its staleness rules, its takeover and heartbeat."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import held
import pytest

from cifar_jax import workdir as workdir_lib
from cifar_jax.workdir import LOCK_NAME, WorkdirInUseError, WorkdirLock, WorkdirLockLostError

REPO = Path(__file__).resolve().parents[1]


def write_lock(folder, **holder) -> None:
    (folder / LOCK_NAME).write_text(json.dumps(holder))


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def dead_holder(**extra) -> dict:
    """A lock left by a process of this host that no longer runs."""
    return dict(host=socket.gethostname(), pid=dead_pid(), pid_space=workdir_lib._pid_space(),
                started="then", what="run", token="dead", **extra)  # fmt: skip


def age(path: Path, seconds: float) -> None:
    old = time.time() - seconds
    os.utime(path, (old, old))


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
    assert sorted(os.listdir(tmp_path)) == []  # no claim, probe or temporary file left
    WorkdirLock(str(tmp_path)).acquire().release()  # and free again


def test_lock_of_a_dead_process_on_this_host_is_taken_over(tmp_path):
    holder = dead_holder()
    write_lock(tmp_path, **holder)
    lock = WorkdirLock(str(tmp_path)).acquire()
    try:
        assert f"process {holder['pid']} on this host is no longer running" in lock.warning
        assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == os.getpid()
        assert sorted(os.listdir(tmp_path)) == [LOCK_NAME]  # claim and aside file removed
    finally:
        lock.release()


def test_a_reused_pid_does_not_keep_a_stale_lock(tmp_path):
    """The pid lives (it is ours) but was started at another time: not the holder."""
    if workdir_lib._process_start(os.getpid()) is None:
        pytest.skip("no /proc on this system")
    write_lock(tmp_path, **{**dead_holder(), "pid": os.getpid(), "process_start": "1"})
    lock = WorkdirLock(str(tmp_path)).acquire()
    assert "no longer running" in lock.warning
    lock.release()


def test_a_dead_pid_in_another_pid_namespace_is_not_judged_by_its_pid(tmp_path):
    """A container on this host name has its own pids: a pid dead here may live there, so
    only the heartbeat's age can make its lock stale."""
    write_lock(tmp_path, **{**dead_holder(), "pid_space": "another-boot/pid:[1]"})
    with pytest.raises(WorkdirInUseError):
        WorkdirLock(str(tmp_path), stale_seconds=60).acquire()
    age(tmp_path / LOCK_NAME, 120)
    lock = WorkdirLock(str(tmp_path), stale_seconds=60).acquire()
    assert "has not been refreshed" in lock.warning
    lock.release()


def test_lock_from_another_host_is_kept_while_fresh_and_taken_when_silent(tmp_path):
    write_lock(tmp_path, host="elsewhere", pid=1, started="x", token="t")
    with pytest.raises(WorkdirInUseError, match="pid 1 on host elsewhere"):
        WorkdirLock(str(tmp_path), stale_seconds=60).acquire()
    age(tmp_path / LOCK_NAME, 120)
    lock = WorkdirLock(str(tmp_path), stale_seconds=60).acquire()
    assert "has not been refreshed" in lock.warning
    lock.release()


def test_age_is_read_on_the_file_systems_clock_not_this_hosts(tmp_path, monkeypatch):
    """A host clock an hour ahead of the file server must not make a fresh lock stale."""
    write_lock(tmp_path, host="elsewhere", pid=1, started="x", token="t")
    real_time = time.time
    monkeypatch.setattr(time, "time", lambda: real_time() + 3600)
    with pytest.raises(WorkdirInUseError, match="pid 1 on host elsewhere"):
        WorkdirLock(str(tmp_path), stale_seconds=60).acquire()


@pytest.mark.parametrize("content", ["", '{"host": "elsewh'], ids=["empty", "torn"])
def test_an_unreadable_lock_is_taken_once_old(tmp_path, monkeypatch, content):
    (tmp_path / LOCK_NAME).write_text(content)
    age(tmp_path / LOCK_NAME, 3600)
    lock = WorkdirLock(str(tmp_path), stale_seconds=1e9).acquire()
    assert "unreadable" in lock.warning
    lock.release()
    # A young one is waited for (a lock being written by hand), then taken once old.
    (tmp_path / LOCK_NAME).write_text(content)
    monkeypatch.setattr(workdir_lib, "TORN_SECONDS", 0.3)
    lock = WorkdirLock(str(tmp_path), stale_seconds=1e9).acquire()
    assert "unreadable" in lock.warning
    lock.release()


def test_the_holder_refreshes_its_lock(tmp_path):
    lock = WorkdirLock(str(tmp_path), heartbeat_seconds=3600).acquire()
    path = tmp_path / LOCK_NAME
    age(path, 1000)
    assert lock.beat()  # one heartbeat, as the thread does every heartbeat_seconds
    assert time.time() - path.stat().st_mtime < 100
    lock.release()


def test_release_does_not_remove_a_lock_taken_over_by_another(tmp_path):
    lock = WorkdirLock(str(tmp_path)).acquire()
    write_lock(tmp_path, host="elsewhere", pid=2, token="theirs")
    lock.release()
    assert (tmp_path / LOCK_NAME).exists()


def test_a_holder_whose_lock_was_taken_finds_out(tmp_path):
    """Its heartbeat, and the check before every checkpoint, see another token."""
    lock = WorkdirLock(str(tmp_path), heartbeat_seconds=3600).acquire()
    lock.verify()  # still ours
    write_lock(tmp_path, host="elsewhere", pid=2, token="theirs", started="now")
    assert not lock.beat()
    assert "pid 2 on host elsewhere" in lock.lost
    with pytest.raises(WorkdirLockLostError, match="lost its lock") as e:
        lock.verify()
    assert "without writing another checkpoint" in str(e.value)
    before = (tmp_path / LOCK_NAME).read_bytes()
    lock.release()
    assert (tmp_path / LOCK_NAME).read_bytes() == before  # the new holder's, untouched


RACER = textwrap.dedent(
    """
    import sys
    from cifar_jax import holds
    from cifar_jax.workdir import WorkdirInUseError, WorkdirLock
    try:
        lock = WorkdirLock(sys.argv[1]).acquire()
    except WorkdirInUseError:
        print("refused", flush=True)
        sys.exit(3)
    print("won", flush=True)
    holds.hold("lock_held")  # keep it until every other racer has given up
    lock.release()
    """
)


@pytest.mark.parametrize("round_", range(3))
def test_eight_processes_racing_for_one_stale_lock_give_one_winner(tmp_path, round_):
    """Every racer reads the same stale lock and judges it stale; a hold point keeps each
    between that judgement and its takeover until all eight are there (the worst
    ordering: on main before the claim file, several of them got the lock)."""
    workdir = tmp_path / "run"
    workdir.mkdir()
    write_lock(workdir, **dead_holder())
    holds_dir = tmp_path / "holds"
    holds_dir.mkdir()
    env = held.env(holds_dir, "lock_read", "lock_held")
    racers = [
        subprocess.Popen([sys.executable, "-c", RACER, str(workdir)], env=env, cwd=REPO,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(8)
    ]  # fmt: skip
    try:
        held.wait(holds_dir, "lock_read", racers, count=8)
        held.release(holds_dir, "lock_read")
        winners = held.settle(holds_dir, "lock_held", racers)
        assert len(winners) == 1, f"{len(winners)} processes hold the lock"
        losers = [p for p in racers if p.pid not in winners]
        for proc in losers:
            out, err = proc.communicate(timeout=120)
            assert proc.returncode == 3 and out.strip() == "refused", err[-2000:]
        held.release(holds_dir, "lock_held")
        (winner,) = [p for p in racers if p.pid in winners]
        out, err = winner.communicate(timeout=120)
        assert winner.returncode == 0 and out.strip() == "won", err[-2000:]
        assert sorted(os.listdir(workdir)) == []  # released; no claim or aside file left
    finally:
        for proc in racers:
            proc.kill()
