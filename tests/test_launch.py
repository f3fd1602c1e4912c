"""launch.sh: one GPU per process, a clear error instead of oversubscribed GPUs, and the
--coordinator path on localhost matching a 1-process run.

GPUs are faked: an ``nvidia-smi`` on PATH that lists N GPUs, and a ``python`` that prints
what each process would run with instead of training (``-c`` snippets run for real).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_distributed import ARGS, _train_losses, one_process_run

# Several processes each (jax.distributed on localhost): minutes; CI runs them.
pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def fake_gpus(tmp_path):
    def make(count: int) -> dict[str, str]:
        bin_dir = tmp_path / f"bin{count}"
        bin_dir.mkdir()
        smi = bin_dir / "nvidia-smi"
        smi.write_text("#!/bin/sh\n" + "".join(
            f'echo "GPU {i}: NVIDIA H200 (UUID: GPU-{i})"\n' for i in range(count)))  # fmt: skip
        py = bin_dir / "fakepython"
        py.write_text(
            f'#!/bin/sh\nif [ "$1" = "-c" ]; then exec {sys.executable} "$@"; fi\n'
            'echo "rank=$CIFAR_JAX_PROCESS_ID gpu=${CUDA_VISIBLE_DEVICES-unset}"\n'
        )
        for f in (smi, py):
            f.chmod(0o755)
        env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
        env["PATH"] = f"{bin_dir}:{env['PATH']}"
        env["PYTHON"] = str(py)
        return env

    return make


def launch(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(REPO / "launch.sh"), *args, "--", "--workdir=x"],
                          env=env, capture_output=True, text=True, timeout=60)  # fmt: skip


def test_one_gpu_per_process(fake_gpus):
    out = launch(fake_gpus(4), "--nproc", "4")
    assert out.returncode == 0, out.stderr
    assert sorted(out.stdout.split("\n")[:-1]) == [f"rank={i} gpu={i}" for i in range(4)]


def test_the_users_cuda_visible_devices_are_the_gpus_used(fake_gpus):
    env = fake_gpus(4)
    env["CUDA_VISIBLE_DEVICES"] = "2,3"
    out = launch(env, "--nproc", "2")
    assert sorted(out.stdout.split("\n")[:-1]) == ["rank=0 gpu=2", "rank=1 gpu=3"]


def test_more_processes_than_gpus_is_refused_with_the_fix(fake_gpus):
    out = launch(fake_gpus(2), "--nproc", "4")
    assert out.returncode == 2 and out.stdout == ""
    assert "--nproc 4 but only 2 GPU(s)" in out.stderr and "Use --nproc 2" in out.stderr
    assert "--config.parallel_trials=N" in out.stderr  # the way to share one GPU


def test_without_gpus_processes_run_on_the_cpu(fake_gpus):
    out = launch(fake_gpus(0), "--nproc", "2")
    assert out.returncode == 0, out.stderr
    assert sorted(out.stdout.split("\n")[:-1]) == ["rank=0 gpu=unset", "rank=1 gpu=unset"]


def _free_slurm_job_id() -> int:
    """A job id whose JAX coordinator port (id % 4096 + 61440) is free here."""
    for job_id in range(4242, 4242 + 4096):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", job_id % 4096 + 61440))
            except OSError:
                continue
        return job_id
    raise RuntimeError("no free port in JAX's Slurm range")


@pytest.fixture(scope="module")
def one_process(tmp_path_factory) -> Path:
    """launch.sh --nproc 1 with ARGS: the run test_distributed.py compares with (trained
    once per session, by whichever file asks first)."""
    return one_process_run(tmp_path_factory)


@pytest.mark.parametrize("how", ["coordinator", "slurm"])
def test_cluster_paths_on_localhost_match_one_process(tmp_path, one_process, how):
    """What a cluster does: one launch.sh per process, told its rank by --coordinator
    flags, or by the SLURM_* variables JAX's cluster detection reads (srun sets them)."""
    base = dict(os.environ, PYTHON=sys.executable, JAX_PLATFORMS="cpu")
    base.pop("XLA_FLAGS", None)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    job_id = _free_slurm_job_id()
    procs = []
    for i in range(2):
        env = dict(base)
        if how == "coordinator":
            flags = ["--coordinator", f"127.0.0.1:{port}", "--num-processes", "2",
                     "--process-id", str(i)]  # fmt: skip
        else:
            flags = ["--slurm"]
            env.update(SLURM_JOB_ID=str(job_id), SLURM_STEP_NODELIST="localhost",
                       SLURM_NTASKS="2", SLURM_PROCID=str(i), SLURM_LOCALID=str(i),
                       SLURM_STEP_NUM_NODES="1")  # fmt: skip
        cmd = ["bash", str(REPO / "launch.sh"), *flags, "--", *ARGS,
               f"--workdir={tmp_path / 'two'}"]  # fmt: skip
        procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))  # fmt: skip
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-3000:]
    two = json.loads((tmp_path / "two" / "results.json").read_text())
    one = json.loads((one_process / "results.json").read_text())
    assert two["num_processes"] == 2 and two["num_devices"] == 2
    np.testing.assert_allclose(_train_losses(one_process), _train_losses(tmp_path / "two"),
                               rtol=2e-4)  # fmt: skip
    assert abs(one["test_accuracy"] - two["test_accuracy"]) <= 0.011
