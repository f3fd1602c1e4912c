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
import time
from pathlib import Path

import pytest

from cifar_jax import config_base, train
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


def start_and_stop(workdir: Path, how: int, after_checkpoints: int = 2) -> subprocess.Popen:
    """Starts a run and sends it signal ``how`` once it has committed some checkpoints."""
    env = dict(os.environ)
    env.pop("XLA_FLAGS", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "cifar_jax.main", *ARGS, f"--workdir={workdir}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    deadline = time.time() + 300
    while len(committed(workdir)) < after_checkpoints and proc.poll() is None:
        assert time.time() < deadline, "no checkpoints appeared"
        time.sleep(0.02)
    proc.send_signal(how)
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
    """A run killed (-9) once it had committed 3 checkpoints: three tests start from a
    copy of it (resume as is, with the latest corrupted, with all corrupted)."""
    workdir = tmp_path_factory.mktemp("killed") / "run"
    assert start_and_stop(workdir, signal.SIGKILL, 3).returncode == -signal.SIGKILL
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
    stopped_at = committed(tmp_path)[-1]
    out = run_main(tmp_path)
    assert f"Resumed from checkpoint at step {stopped_at}" in out.stdout
    assert results(tmp_path)["state_sha256"] == straight["state_sha256"]


@pytest.mark.parametrize("checkpoints_before_kill", [1, 3])
def test_kill_9_at_several_points_resumes_bitwise_identical(
    tmp_path, straight, checkpoints_before_kill, request
):
    if checkpoints_before_kill == 3:
        tmp_path = request.getfixturevalue("killed")
    else:
        proc = start_and_stop(tmp_path, signal.SIGKILL, checkpoints_before_kill)
        assert proc.returncode == -signal.SIGKILL
    assert len(committed(tmp_path)) >= checkpoints_before_kill
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
    config = config_base.base_config()
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
    stops naming the first; after the first dies (kill -9) its lock is taken over."""
    env = dict(os.environ)
    env.pop("XLA_FLAGS", None)
    longer = ("--config.num_epochs=60", "--config.checkpoint_every_steps=100")
    first = subprocess.Popen(
        [sys.executable, "-m", "cifar_jax.main", *ARGS, *longer, f"--workdir={tmp_path}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    deadline = time.time() + 300
    while not committed(tmp_path) and first.poll() is None:
        assert time.time() < deadline, "no checkpoint appeared"
        time.sleep(0.02)
    started = time.time()
    second = run_main(tmp_path, *longer, check=False)
    if first.poll() is not None:
        pytest.skip("the first run finished before the second started")
    assert second.returncode == 1, second.stderr[-2000:]
    assert f"in use by run pid {first.pid} on host" in second.stderr
    assert "another --workdir" in second.stderr and "Traceback" not in second.stderr
    assert "Resumed" not in second.stdout and time.time() - started < 120
    first.send_signal(signal.SIGKILL)
    first.wait()
    assert (tmp_path / ".cifar_jax.lock").exists()  # kill -9 leaves the lock behind
    # The third run finishes one epoch past the last checkpoint, not the first run's 60.
    last = committed(tmp_path)[-1]
    third = run_main(tmp_path, *longer, f"--config.num_train_steps={last + 16}")
    assert "took over the lock" in third.stdout
    assert f"process {first.pid} on this host is no longer running" in third.stdout
    assert f"Resumed from checkpoint at step {last}" in third.stdout
    assert results(tmp_path)["steps"] == last + 16
    assert not (tmp_path / ".cifar_jax.lock").exists()
