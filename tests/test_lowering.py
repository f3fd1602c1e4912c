"""One traced program, right on CPU and GPU: every config's real steps lower for CUDA with
no CPU-only custom call, and for the CPU with the CPU kernels, from this CPU-only machine.

The kernels are chosen by the platform a step is lowered for
(:mod:`cifar_jax.kernels.lowering`), not by the process's default backend, which here is
always the CPU. ``jax.export`` lowers for a platform that this machine does not have.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cifar_jax import model_summary as summary
from cifar_jax.kernels import onednn

# Lowering for CUDA and the CPU from either: these also run on a GPU host (gpu_check.sh).
pytestmark = pytest.mark.accelerator
REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted((REPO / "configs").glob("*.py"))


def load(path: Path):
    spec = importlib.util.spec_from_file_location(f"cfg_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config()
    config.batch_size = config.eval_batch_size = 8  # the program's ops do not depend on it
    return config


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_every_config_lowers_for_cuda_without_cpu_kernels_and_for_cpu_with_them(path):
    config = load(path)
    config.tta = "flip"  # the TTA step too
    cuda = summary.lower_steps(config, "cuda")
    assert set(cuda) == {"train", "eval", "tta"}
    for step, module in cuda.items():
        assert onednn.TARGET_NAME not in summary.custom_calls(module), (path.stem, step)
        assert onednn.TARGET_NAME not in module
    if not onednn.available():
        pytest.skip(f"oneDNN kernel unavailable here: {onednn.unavailable_reason()}")
    cpu = summary.lower_steps(config, "cpu")
    for step, module in cpu.items():
        assert onednn.TARGET_NAME in summary.custom_calls(module), (path.stem, step)


EIGHT_DEVICES = """
import json
from cifar_jax import model_summary as summary
from cifar_jax import parallel
from cifar_jax.kernels import onednn
from tests.test_lowering import load, REPO
out = {}
for name in ("resnet_small", "cnn_bn_dropout"):
    config = load(REPO / "configs" / f"{name}.py")
    assert len(parallel.create_mesh().devices.flat) == 8
    for platform in ("cuda", "cpu"):
        module = summary.lower_steps(config, platform)["train"]
        out[f"{name}/{platform}"] = summary.custom_calls(module)
print(json.dumps({"calls": out, "onednn": onednn.available()}))
"""


def test_eight_device_mesh_lowers_for_cuda_and_cpu():
    env = dict(os.environ, JAX_PLATFORMS="cpu",
               XLA_FLAGS="--xla_force_host_platform_device_count=8")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", EIGHT_DEVICES], env=env, cwd=REPO,
                         capture_output=True, text=True, timeout=600)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    for key, calls in result["calls"].items():
        if key.endswith("/cuda"):
            assert onednn.TARGET_NAME not in calls, key
        elif result["onednn"]:
            assert onednn.TARGET_NAME in calls, key  # per device shard, inside shard_map


def test_summary_lower_for_prints_the_line_and_rejects_unknown_platforms():
    cmd = [
        sys.executable,
        "-m",
        "cifar_jax",
        "summary",
        f"--config={REPO / 'configs/lenet.py'}",
    ]
    out = subprocess.run([*cmd, "--lower_for=cuda"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    last = out.stdout.strip().splitlines()[-1]
    assert last.startswith("lowered train step for cuda: ") and last.endswith("custom calls: []")
    assert int(last.split(": ")[1].split()[0]) > 100
    bad = subprocess.run([*cmd, "--lower_for=gpu"], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 1 and "cannot lower for 'gpu'" in bad.stderr
