"""Preemption, crashes, broken checkpoints, full disks and NaNs: nothing good is lost.

Every scenario runs the real command line and compares the final parameters
(``state_sha256``) with one uninterrupted run of the same config.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import held
import pytest

from cifar_jax import config as config_lib
from cifar_jax import train
from cifar_jax.errors import TrainingError

REPO = Path(__file__).resolve().parents[1]

ARGS = [
    f"--config={REPO / 'configs' / 'lenet.py'}",
    "--config.data_source=synthetic",
    "--config.synthetic_train_examples=512",
    "--config.synthetic_test_examples=64",
    "--config.batch_size=32",
    "--config.val_examples=0",
    "--config.num_epochs=2",
    "--config.log_every_steps=4",
    "--config.checkpoint_every_steps=4",
    "--config.keep_checkpoints=4",
]


def run_main(workdir: Path, *extra: str, check: bool = True) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.pop("XLA_FLAGS", None)
    out = subprocess.run(
        [sys.executable, "-m", "cifar_jax.main", *ARGS, f"--workdir={workdir}", *extra],
        capture_output=True, text=True, timeout=600, env=env,
    )  # fmt: skip
    if check:
        assert out.returncode == 0, out.stderr[-3000:]
    return out


def committed(workdir: Path) -> list[int]:
    root = workdir / "checkpoints"
    if not root.exists():
        return []
    return sorted(
        int(d.name) for d in root.iterdir()
        if d.name.isdigit() and (d / "commit_success.txt").exists()
    )  # fmt: skip


def results(workdir: Path) -> dict:
    return json.loads((workdir / "results.json").read_text())


def tree_digest(folder: Path) -> str:
    """A digest of every file's path and bytes in the committed checkpoints under ``folder``."""
    digest = hashlib.sha256()
    for step in committed(folder.parent):
        for path in sorted(p for p in (folder / str(step)).rglob("*") if p.is_file()):
            digest.update(str(path.relative_to(folder)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def start_held(workdir: Path, step: int, *points: str) -> tuple[subprocess.Popen, Path]:
    """Starts a run that stops at ``step`` (cifar_jax/holds.py) and waits until it is
    there; returns it and its holds folder (:func:`held.release` lets it go on)."""
    holds_dir = workdir.parent / f"holds-{workdir.name}"
    holds_dir.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [sys.executable, "-m", "cifar_jax.main", *ARGS, f"--workdir={workdir}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=held.env(holds_dir, f"step@{step}", *points),
    )  # fmt: skip
    held.wait(holds_dir, f"step@{step}", [proc])
    return proc, holds_dir


def start_and_stop(workdir: Path, how: int, at_step: int = 9) -> subprocess.Popen:
    """Runs to step ``at_step`` (checkpoints every 4 steps: 2 committed at step 9), sends
    signal ``how`` there, and lets the run go on to handle it."""
    proc, holds_dir = start_held(workdir, at_step)
    proc.send_signal(how)
    held.release(holds_dir, f"step@{at_step}")
    proc.wait(timeout=300)
    return proc


@pytest.fixture(scope="module")
def straight_dir(tmp_path_factory) -> Path:
    """One uninterrupted run: the reference for every scenario (copy it before changing)."""
    workdir = tmp_path_factory.mktemp("straight") / "run"
    run_main(workdir)
    return workdir


@pytest.fixture
def straight(straight_dir) -> dict:
    return results(straight_dir)


@pytest.fixture
def finished(tmp_path, straight_dir) -> Path:
    """A private copy of the finished reference run."""
    shutil.copytree(straight_dir, tmp_path / "run")
    return tmp_path / "run"


@pytest.fixture(scope="module")
def killed_dir(tmp_path_factory) -> Path:
    """A run killed (-9) at step 14, after committing 3 checkpoints: three tests start from
    a copy of it (resume as is, with the latest corrupted, with all corrupted)."""
    workdir = tmp_path_factory.mktemp("killed") / "run"
    assert start_and_stop(workdir, signal.SIGKILL, 14).returncode == -signal.SIGKILL
    assert committed(workdir) == [4, 8, 12]
    return workdir


@pytest.fixture
def killed(tmp_path, killed_dir) -> Path:
    """A private copy of the killed run (its stale lock included)."""
    shutil.copytree(killed_dir, tmp_path / "run")
    return tmp_path / "run"


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_saves_and_the_rerun_resumes_exactly(tmp_path, straight, how):
    """Preemption (SIGTERM, exit 143) and Ctrl-C (SIGINT, exit 130) through the real CLI."""
    proc = start_and_stop(tmp_path, how)
    stderr = proc.stderr.read()
    assert proc.returncode == 128 + how, stderr[-2000:]
    assert f"stopped by {how.name}" in stderr and "Rerun the same command" in stderr
    assert "Traceback" not in stderr
    assert not (tmp_path / "results.json").exists()
    assert not (tmp_path / ".cifar_jax.lock").exists(), "the stopped run kept its lock"
    assert committed(tmp_path) == [4, 8, 9]  # the signal at step 9 saved step 9
    out = run_main(tmp_path)
    assert "Resumed from checkpoint at step 9" in out.stdout
    assert results(tmp_path)["state_sha256"] == straight["state_sha256"]


@pytest.mark.parametrize("checkpoints_before_kill", [1, 3])
def test_kill_9_at_several_points_resumes_bitwise_identical(
    tmp_path, straight, checkpoints_before_kill, request
):
    if checkpoints_before_kill == 3:
        tmp_path = request.getfixturevalue("killed")
    else:
        proc = start_and_stop(tmp_path, signal.SIGKILL, 6)
        assert proc.returncode == -signal.SIGKILL
    assert len(committed(tmp_path)) == checkpoints_before_kill
    run_main(tmp_path)
    assert results(tmp_path)["state_sha256"] == straight["state_sha256"]


def _corrupt(checkpoint_dir: Path) -> None:
    for path in (checkpoint_dir / "state").rglob("*"):
        if path.is_file():
            path.write_bytes(b"\x00garbage" * 8)


def test_corrupt_latest_checkpoint_falls_back_to_the_previous_one(killed, straight):
    tmp_path = killed
    steps = committed(tmp_path)
    _corrupt(tmp_path / "checkpoints" / str(steps[-1]))
    out = run_main(tmp_path)
    assert f"checkpoint {steps[-1]}" in out.stderr and "cannot be read" in out.stderr
    assert f"Resumed from checkpoint at step {steps[-2]}" in out.stdout
    assert results(tmp_path)["state_sha256"] == straight["state_sha256"]
    # The unreadable checkpoint is kept for inspection, not deleted.
    assert any(
        p.name.startswith(f"{steps[-1]}-") for p in (tmp_path / "checkpoints_unreadable").iterdir()
    )


def test_all_checkpoints_corrupt_stops_without_touching_them(killed):
    tmp_path = killed
    for step in committed(tmp_path):
        _corrupt(tmp_path / "checkpoints" / str(step))
    before = tree_digest(tmp_path / "checkpoints")
    out = run_main(tmp_path, check=False)
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert "can be restored" in out.stderr and "new --workdir" in out.stderr
    assert tree_digest(tmp_path / "checkpoints") == before


def test_checkpoint_from_another_model_is_explained_and_kept(finished):
    tmp_path = finished
    before = tree_digest(tmp_path / "checkpoints"), (tmp_path / "results.json").read_bytes()
    out = run_main(tmp_path, "--config.model=cnn_baseline", check=False)
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert "model: 'lenet' -> 'cnn_baseline'" in out.stderr
    after = tree_digest(tmp_path / "checkpoints"), (tmp_path / "results.json").read_bytes()
    assert after == before


def test_full_disk_stops_cleanly_and_keeps_good_checkpoints(finished):
    tmp_path = finished
    before = tree_digest(tmp_path / "checkpoints"), (tmp_path / "results.json").read_bytes()
    steps = committed(tmp_path)
    # `ulimit -f` caps file size: the next checkpoint's data file cannot be written,
    # which is what a full disk looks like to the writer.
    # Three epochs instead of two: the run resumes and must write a new checkpoint.
    args = [*ARGS, f"--workdir={tmp_path}", "--config.num_epochs=3"]
    cmd = " ".join([sys.executable, "-m", "cifar_jax.main", *args])
    out = subprocess.run(["bash", "-c", f"ulimit -f 200; exec {cmd}"],
                         capture_output=True, text=True, timeout=600)  # fmt: skip
    assert out.returncode == 1, out.stderr[-2000:]
    assert "Traceback" not in out.stderr
    assert "could not write checkpoint" in out.stderr and "are kept" in out.stderr
    assert committed(tmp_path) == steps
    after = tree_digest(tmp_path / "checkpoints"), (tmp_path / "results.json").read_bytes()
    assert after == before


def test_finished_run_is_not_redone(finished):
    tmp_path = finished
    first = (tmp_path / "results.json").read_bytes()
    out = run_main(tmp_path)
    assert "holds a finished run" in out.stdout
    assert (tmp_path / "results.json").read_bytes() == first


def _nan_config(**overrides):
    config = config_lib.base_config()
    config.update(
        dict(data_source="synthetic", synthetic_train_examples=256, synthetic_test_examples=32,
             model="lenet", optimizer="sgd", learning_rate=1e30, batch_size=32,
             num_train_steps=6, checkpoint_every_steps=1, log_every_steps=3)
    )  # fmt: skip
    config.update(overrides)
    return config


def test_nan_loss_stops_at_once_and_keeps_the_last_good_checkpoint(tmp_path):
    with pytest.raises(TrainingError, match="loss is nan at step 2"):
        train.train_and_evaluate(_nan_config(), str(tmp_path))
    assert committed(tmp_path) == [1]  # the state after step 1 had a finite loss


def test_nan_loss_can_be_skipped(tmp_path):
    out = train.train_and_evaluate(_nan_config(nonfinite_loss="skip"), str(tmp_path))
    assert out["skipped_nonfinite_steps"] >= 4
    assert out["steps"] == 6


def test_second_run_on_a_live_workdir_stops_at_once_and_a_killed_ones_lock_is_taken_over(
    tmp_path,
):
    """Two writers in one workdir would rotate each other's checkpoints: the second run
    stops naming the first (held at step 5, so it is certainly alive); after the first
    dies (kill -9) its lock is taken over."""
    workdir = tmp_path / "run"
    first, _ = start_held(workdir, 5)
    try:
        second = run_main(workdir, check=False)
        assert second.returncode == 1, second.stderr[-2000:]
        assert f"in use by run pid {first.pid} on host" in second.stderr
        assert "another --workdir" in second.stderr and "Traceback" not in second.stderr
        assert "Resumed" not in second.stdout
    finally:
        first.kill()
        first.wait()
    assert (workdir / ".cifar_jax.lock").exists()  # kill -9 leaves the lock behind
    assert committed(workdir) == [4]
    third = run_main(workdir)
    assert "took over the lock" in third.stdout
    assert f"process {first.pid} on this host is no longer running" in third.stdout
    assert "Resumed from checkpoint at step 4" in third.stdout
    assert results(workdir)["steps"] == 32
    assert not (workdir / ".cifar_jax.lock").exists()


def test_a_run_whose_lock_is_taken_stops_without_writing_again(tmp_path):
    """Another process takes the lock of a live run (by hand, or a host whose heartbeat
    stalled past the stale limit): at its next checkpoint the run sees the lock is not
    its own and stops with exit 1, writing no checkpoint, log or result."""
    workdir = tmp_path / "run"
    proc, holds_dir = start_held(workdir, 5)
    assert committed(workdir) == [4]
    theirs = {"host": "elsewhere", "pid": 7, "started": "now", "what": "run", "token": "theirs"}
    (workdir / ".cifar_jax.lock").write_text(json.dumps(theirs))
    before = {p: p.read_bytes() for p in workdir.rglob("*") if p.is_file()}
    held.release(holds_dir, "step@5")
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 1, err[-2000:]
    assert "lost its lock" in err and "pid 7 on host elsewhere" in err
    assert "Traceback" not in err
    assert committed(workdir) == [4] and not (workdir / "results.json").exists()
    after = {p: p.read_bytes() for p in workdir.rglob("*") if p.is_file()}
    # Only the metrics logs of steps 5-8 (written before the checkpoint check) may differ.
    changed = {p.relative_to(workdir).parts[0] for p in set(before) | set(after)
               if before.get(p) != after.get(p)}  # fmt: skip
    assert changed <= {"metrics.jsonl", "tensorboard"}, changed
