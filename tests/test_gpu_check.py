"""scripts/gpu_check.sh in its CPU mode (GPU_CHECK_PLATFORM=cpu), on synthetic data, with the
smallest budget: every stage in the summary, determinism compared, a failing stage
recorded without stopping the script, and the stage table printed last.

Only the LeNet pair of runs (and a failing tests stage) run here, to stay well under a
minute; the other stages are recorded as not selected. The full CPU mode (every stage,
real, partial and no data) was run by hand: docs/gpu.md."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "gpu_check.sh"
STAGES = [
    "install",
    "env",
    "data",
    "train_lenet_a",
    "train_lenet_b",
    "train_resnet_small_a",
    "train_resnet_small_b",
    "bench_f32",
    "airbench94",
    "bench_bf16",
    "tests",
    "tests_cpu",
]


def _gpu_check_module():
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        import gpu_check
    finally:
        sys.path.pop(0)
    return gpu_check


@pytest.mark.skipif(sys.platform != "linux", reason="bash and coreutils' timeout")
def test_cpu_mode_on_synthetic_data_records_every_stage_and_prints_the_table_last(tmp_path):
    out = tmp_path / "out"
    env = dict(
        os.environ,
        GPU_CHECK_PLATFORM="cpu",
        GPU_CHECK_OUT=str(out),
        GPU_CHECK_PYTHON=sys.executable,
        CIFAR_JAX_DATA=str(tmp_path / "no_data"),  # nothing there: synthetic
        GPU_CHECK_STAGES="data,train_lenet_a,train_lenet_b,tests",
        GPU_CHECK_TESTS="tests/no_such_test_file.py",  # a stage that fails
    )
    proc = subprocess.run(
        ["bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=170
    )
    assert proc.returncode == 1, proc.stderr  # the failing tests stage
    summary = json.loads((out / "summary.json").read_text())
    assert list(summary["stages"]) == STAGES
    status = {name: s["status"] for name, s in summary["stages"].items()}
    assert status["install"] == "skipped"
    assert status["data"] == status["train_lenet_a"] == status["train_lenet_b"] == "ok"
    assert status["tests"] == "failed" and summary["failed_stages"] == ["tests"]
    assert status["bench_f32"] == "not selected"
    assert summary["data"]["kind"] == "synthetic"
    assert summary["determinism"]["lenet"]["equal"] is True
    assert "synthetic: timing only" in summary["stages"]["train_lenet_a"]["key"]

    lines = [x for x in proc.stdout.splitlines() if x.strip()]
    header = lines.index("| stage | status | seconds | key numbers |")
    assert lines[header + 2 :] == [x for x in lines[header + 2 :] if x.startswith("| ")]
    assert [x.split("|")[1].strip() for x in lines[header + 2 :]] == STAGES
    assert (out / "summary.md").read_text().splitlines()[-1] == lines[-1]


def test_missing_wheels_lists_only_packages_the_machine_lacks(tmp_path, capsys):
    for name in ("numpy-1.0-py3-none-any.whl", "surely_not_installed_pkg-1.0-py3-none-any.whl"):
        (tmp_path / name).write_bytes(b"")
    assert _gpu_check_module().main(["missing-wheels", str(tmp_path)]) == 0
    printed = capsys.readouterr().out.split()
    assert printed == [str(tmp_path / "surely_not_installed_pkg-1.0-py3-none-any.whl")]
