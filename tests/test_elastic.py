"""Elastic resume: a run checkpointed on one machine shape resumes on another.

The parameters are replicated and batch t is a function of (seed, t) alone, so a run
continues with the same data order on any number of devices and processes. Only the order
of the per-device partial sums changes, so the result matches an uninterrupted run up to
float rounding, not bitwise. Each test trains 8 steps on one shape, then steps 9-16 on
another, and compares with 16 uninterrupted steps on one device.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]

ARGS = [
    f"--config={REPO / 'configs' / 'cnn_bn_dropout.py'}",  # BatchNorm and dropout
    "--config.data_source=synthetic",
    "--config.synthetic_train_examples=384",
    "--config.synthetic_test_examples=512",
    "--config.widths=(8,8,8)",
    "--config.head_widths=(16,16)",
    "--config.batch_size=32",
    "--config.eval_batch_size=32",
    "--config.val_examples=64",
    "--config.test_checkpoint=final",
    "--config.early_stopping_patience=0",
    "--config.log_every_steps=2",
    "--config.checkpoint_every_steps=4",
]


def train(workdir: Path, steps: int, devices: int = 1, processes: int = 1,
          check: bool = True, *extra: str) -> subprocess.CompletedProcess:  # fmt: skip
    env = dict(os.environ, PYTHON=sys.executable, JAX_PLATFORMS="cpu")
    env.pop("XLA_FLAGS", None)
    if devices // processes > 1:  # devices in all, over the processes
        env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices // processes}"
    args = [*ARGS, f"--config.num_train_steps={steps}", *extra, f"--workdir={workdir}"]
    if processes > 1:
        cmd = ["bash", str(REPO / "launch.sh"), "--nproc", str(processes), "--", *args]
    else:
        cmd = [sys.executable, "-m", "cifar_jax.main", *args]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    if check:
        assert out.returncode == 0, out.stderr[-4000:]
    return out


def results(workdir: Path) -> dict:
    return json.loads((workdir / "results.json").read_text())


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> dict:
    workdir = tmp_path_factory.mktemp("straight")
    train(workdir, 16)
    return results(workdir)


@pytest.fixture(scope="module")
def eight_steps_on_one_device(tmp_path_factory) -> Path:
    """Steps 1-8 on one device: the first half of two tests (each resumes a copy)."""
    workdir = tmp_path_factory.mktemp("one_device") / "run"
    train(workdir, 8)
    return workdir


@pytest.mark.parametrize(
    "first, then",
    [((8, 1), (1, 1)), ((1, 1), (4, 1)), ((2, 2), (1, 1))],
    ids=["8_devices_to_1", "1_device_to_4", "2_processes_to_1"],
)
def test_resume_on_another_machine_shape(tmp_path, straight, first, then, request):
    (devices, processes), (devices2, processes2) = first, then
    if first == (1, 1):
        shutil.copytree(request.getfixturevalue("eight_steps_on_one_device"), tmp_path,
                        dirs_exist_ok=True)  # fmt: skip
    else:
        train(tmp_path, 8, devices, processes)
    assert results(tmp_path)["num_devices"] == devices
    out = train(tmp_path, 16, devices2, processes2)
    assert "Resumed from checkpoint at step 8" in out.stdout
    assert (
        f"checkpoint 8 was written with {devices} device(s) in {processes} process(es), "
        f"this run has {devices2} in {processes2}"
    ) in out.stdout
    resumed = results(tmp_path)
    assert resumed["steps"] == 16 and resumed["num_devices"] == devices2
    assert abs(resumed["test_accuracy"] - straight["test_accuracy"]) <= 0.005
    np.testing.assert_allclose(resumed["test_loss"], straight["test_loss"], rtol=1e-3)


def test_same_shape_resume_says_nothing_about_shape(tmp_path, eight_steps_on_one_device):
    shutil.copytree(eight_steps_on_one_device, tmp_path, dirs_exist_ok=True)
    out = train(tmp_path, 16)
    assert "Resumed from checkpoint at step 8" in out.stdout
    assert "machine shape changed" not in out.stdout


def test_batch_the_new_shape_cannot_split_stops_before_touching_the_checkpoints(tmp_path):
    train(tmp_path, 8, 1, 1, True, "--config.batch_size=36", "--config.eval_batch_size=36")

    def digest() -> str:
        h = hashlib.sha256()
        for p in sorted((tmp_path / "checkpoints").rglob("*")):
            if p.is_file():
                h.update(str(p.relative_to(tmp_path)).encode() + p.read_bytes())
        return h.hexdigest() + (tmp_path / "results.json").read_text()

    before = digest()
    out = train(tmp_path, 16, 8, 1, False, "--config.batch_size=36",
                "--config.eval_batch_size=36")  # fmt: skip
    assert out.returncode == 1
    assert "batch_size=36 cannot be split evenly over the 8 devices" in out.stderr
    assert "Resumed" not in out.stdout
    assert digest() == before
