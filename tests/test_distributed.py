"""Multi-process data parallelism: 2 processes on localhost == 1 process, same global batch."""

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import held
import numpy as np
import pytest

# Several processes each (jax.distributed on localhost): minutes; CI runs them.
pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]

ARGS = [
    f"--config={REPO / 'configs' / 'cnn_bn_dropout.py'}",
    "--config.data_source=synthetic",
    "--config.synthetic_train_examples=384",
    "--config.synthetic_test_examples=100",
    "--config.widths=(8,8,8)",
    "--config.head_widths=(16,16)",
    "--config.batch_size=32",
    "--config.eval_batch_size=32",
    "--config.val_examples=64",
    "--config.num_train_steps=16",
    "--config.log_every_steps=2",
    "--config.checkpoint_every_steps=8",
]


def _launch(workdir: Path, nproc: int) -> dict:
    env = dict(os.environ, PYTHON=sys.executable)
    env.pop("XLA_FLAGS", None)
    cmd = ["bash", str(REPO / "launch.sh"), "--nproc", str(nproc), "--", *ARGS]
    out = subprocess.run(
        [*cmd, f"--workdir={workdir}"], env=env, capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stderr[-4000:]
    return json.loads((workdir / "results.json").read_text())


_SHARED: dict[str, Path] = {}


def one_process_run(tmp_path_factory) -> Path:
    """The 1-process run of ARGS through launch.sh, trained once per session: the
    reference of this file and of tests/test_launch.py's cluster paths."""
    if "one" not in _SHARED:
        workdir = tmp_path_factory.mktemp("one_process") / "run"
        _launch(workdir, 1)
        _SHARED["one"] = workdir
    return _SHARED["one"]


def two_process_run(tmp_path_factory) -> Path:
    """The uninterrupted 2-process run of ARGS, trained once per session."""
    if "two" not in _SHARED:
        workdir = tmp_path_factory.mktemp("two_processes") / "run"
        _launch(workdir, 2)
        _SHARED["two"] = workdir
    return _SHARED["two"]


def _train_losses(workdir: Path) -> list[float]:
    records = [json.loads(x) for x in (workdir / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in records if r.get("split") == "train"]


def test_two_processes_match_one_process(tmp_path, tmp_path_factory):
    # A model with BatchNorm and dropout: BN statistics must span the global batch and the
    # dropout masks must not depend on how the batch is split.
    one_dir = one_process_run(tmp_path_factory)
    one = json.loads((one_dir / "results.json").read_text())
    two_dir = two_process_run(tmp_path_factory)
    two = json.loads((two_dir / "results.json").read_text())
    assert one["num_processes"] == 1 and two["num_processes"] == 2
    assert two["num_devices"] == 2
    np.testing.assert_allclose(_train_losses(one_dir), _train_losses(two_dir),
                               rtol=2e-4)  # fmt: skip
    assert abs(one["test_accuracy"] - two["test_accuracy"]) <= 0.011
    np.testing.assert_allclose(one["test_loss"], two["test_loss"], rtol=1e-3)
    # Only process 0 writes the results and the logs; checkpoints exist once.
    assert sorted(os.listdir(two_dir / "checkpoints")) == ["16", "8"]


def test_sigterm_to_one_process_stops_both_at_the_same_step(tmp_path, tmp_path_factory):
    """A scheduler preempting one node signals one process. Both processes stand at step
    3 (a hold point) when process 1 alone gets SIGTERM: both must stop after the same
    step, save one checkpoint together and exit 143, and the rerun must end where an
    uninterrupted run does. (On main, process 1 read its own flag at step 3 and entered
    the checkpoint save while process 0 entered step 4: both hung.)"""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    workdir = tmp_path / "run"
    holds_dir = tmp_path / "holds"
    holds_dir.mkdir()
    procs = []
    for i in range(2):
        env = held.env(holds_dir, "step@3")
        env.update(CIFAR_JAX_COORDINATOR=f"127.0.0.1:{port}", CIFAR_JAX_NUM_PROCESSES="2",
                   CIFAR_JAX_PROCESS_ID=str(i))  # fmt: skip
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "cifar_jax.main", *ARGS, f"--workdir={workdir}"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        ))  # fmt: skip
    try:
        held.wait(holds_dir, "step@3", procs, count=2)
        procs[1].send_signal(signal.SIGTERM)
        held.release(holds_dir, "step@3")
        outs = [p.communicate(timeout=180) for p in procs]
    finally:
        for p in procs:
            p.kill()
    for proc, (_, err) in zip(procs, outs, strict=True):
        assert proc.returncode == 143, err[-3000:]
        assert "stopped by SIGTERM after step 4/16" in err, err[-3000:]
    assert sorted(os.listdir(workdir / "checkpoints")) == ["4"]
    rerun = _launch(workdir, 2)
    assert rerun["resumed_from_step"] == 4
    two = json.loads((two_process_run(tmp_path_factory) / "results.json").read_text())
    assert rerun["state_sha256"] == two["state_sha256"]
