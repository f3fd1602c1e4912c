"""The suite runs on the CPU also where JAX's default would be a GPU, unless asked to run
its accelerator tests there (``tests/platforms.py``, ``tests/conftest.py``)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import platforms
import pytest

REPO = Path(__file__).resolve().parents[1]


def test_the_cpu_is_chosen_unless_an_accelerator_is_asked_for():
    for environ in ({}, {"JAX_PLATFORMS": "cuda"}, {"CIFAR_JAX_TEST_PLATFORM": "CPU"}):
        choice = platforms.choose(environ)
        assert (choice.platform, choice.jax_platforms, choice.accelerator) == ("cpu", "cpu", False)
    assert (
        "replacing the inherited JAX_PLATFORMS=cuda"
        in platforms.choose({"JAX_PLATFORMS": "cuda"}).reason
    )
    # "gpu" means CUDA: JAX would expand it to cuda, rocm and oneapi and fail on rocm.
    for wanted, jax_platforms, backend in (
        ("gpu", "cuda,cpu", "gpu"),
        ("cuda", "cuda,cpu", "gpu"),
        ("rocm", "rocm,cpu", "gpu"),
        ("tpu", "tpu,cpu", "tpu"),
    ):
        choice = platforms.choose({"CIFAR_JAX_TEST_PLATFORM": wanted, "JAX_PLATFORMS": "cpu"})
        assert choice.accelerator and choice.jax_platforms == jax_platforms
        assert choice.backend_name == backend
    with pytest.raises(ValueError, match=r"'cuad'.*cpu \(the default\) or one of cuda, gpu"):
        platforms.choose({"CIFAR_JAX_TEST_PLATFORM": "cuad"})


@pytest.mark.accelerator
def test_the_session_runs_on_the_platform_conftest_chose():
    """Fails if conftest stops forcing the CPU: nothing else sets JAX_PLATFORMS for
    this process, and JAX reads it at import."""
    choice = platforms.choose(os.environ)
    assert os.environ["JAX_PLATFORMS"] == choice.jax_platforms
    assert jax.config.jax_platforms == choice.jax_platforms
    assert jax.default_backend() == choice.backend_name
    assert jax.devices("cpu")  # the CPU stays there for the tests that pin it
    if not choice.accelerator:
        from jax.extend import backend

        # The default backend is the CPU backend itself (with all its forced devices),
        # not another one that also calls its devices "cpu".
        assert backend.get_backend() is backend.get_backend("cpu")


def _pytest(env: dict[str, str], *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
        env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


@pytest.mark.parametrize(
    "wanted, message",
    [
        ("cuad", "'cuad' is not a platform the suite knows"),
        # No NVIDIA GPU here: JAX skips cuda and would quietly run on the CPU.
        ("cuda", "asks for cuda, but with JAX_PLATFORMS=cuda,cpu JAX's default backend is cpu"),
    ],
)
def test_an_accelerator_that_is_not_there_stops_the_session(wanted, message):
    if wanted == "cuda" and os.path.exists("/dev/nvidiactl"):
        pytest.skip("this machine has an NVIDIA GPU")
    env = dict(os.environ, CIFAR_JAX_TEST_PLATFORM=wanted)
    out = _pytest(env, "tests/test_platforms.py", "-k", "chosen_platform")
    assert out.returncode == pytest.ExitCode.USAGE_ERROR, out.stdout[-2000:]
    assert message in out.stderr, out.stderr[-2000:]


FAKE_GPU_PLUGIN = textwrap.dedent(
    """
    def initialize():
        from jax._src import xla_bridge
        from jaxlib import xla_client

        xla_bridge.register_backend_factory(
            "fake_gpu", lambda: xla_client.make_cpu_client(num_devices=1), priority=500,
            fail_quietly=False,
        )
    """
)

# What tells: the session's own backend, and a subprocess asking for 8 CPU devices.
DEVICE_SENSITIVE = [
    "tests/test_platforms.py::test_the_session_runs_on_the_platform_conftest_chose",
    "tests/test_materialize.py::test_conv_input_adds_no_communication_on_a_sharded_batch",
]


def test_device_sensitive_tests_pass_under_a_fake_gpu_first_platform_order(tmp_path):
    """A GPU host, simulated: a fake accelerator plugin and ``JAX_PLATFORMS=fake_gpu,cpu``
    inherited by pytest, as a user's ``export JAX_PLATFORMS=cuda`` would be.

    Why a fake plugin: on this CPU-only machine ``JAX_PLATFORMS=cuda,cpu`` quietly runs on
    the CPU (JAX skips cuda where no NVIDIA GPU is visible), and ``tpu,cpu`` or
    ``rocm,cpu`` stop JAX at start-up (no plugin): neither looks like a GPU host. The
    plugin registers itself as real ones do (a ``jax_plugins`` module) and makes a
    1-device backend with a GPU plugin's priority: JAX's default backend is then not the
    CPU backend and has 1 device, while ``--xla_force_host_platform_device_count=8``
    gives the CPU backend 8, which is how a 1-GPU host looks to the tests. Its devices
    are still XLA:CPU devices (a Python plugin cannot bring another platform's
    compiler), so the oneDNN call failing to lower for CUDA is not reproduced here; the
    GPU check runs ``tests/test_bench.py::test_conv_timing_covers_each_implementation``
    on a real GPU for that.

    The probe first shows the fake in charge when nothing forces the CPU; then the
    device-sensitive tests pass because conftest replaces the inherited order. Without
    that (checked by hand with ``--noconftest``), the first fails in-process and the
    second in its 8-device subprocess, which finds 1 device.
    """
    plugin = tmp_path / "jax_plugins" / "cifar_jax_fake_gpu"
    plugin.mkdir(parents=True)
    (plugin / "__init__.py").write_text(FAKE_GPU_PLUGIN)
    env = {k: v for k, v in os.environ.items() if k != platforms.OPT_IN}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(tmp_path), env.get("PYTHONPATH")]))
    env["JAX_PLATFORMS"] = "fake_gpu,cpu"

    probe = subprocess.run(
        [sys.executable, "-c", "import jax; print(jax.device_count(), jax.device_count('cpu'))"],
        env=dict(env, XLA_FLAGS="--xla_force_host_platform_device_count=8"),
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert probe.returncode == 0, probe.stderr[-2000:]
    assert probe.stdout.split() == ["1", "8"], "the fake accelerator is not JAX's default"

    out = _pytest(env, "-rs", *DEVICE_SENSITIVE)
    assert out.returncode == 0, out.stdout[-3000:]
    assert "replacing the inherited JAX_PLATFORMS=fake_gpu,cpu" in out.stdout
    assert f"{len(DEVICE_SENSITIVE)} passed" in out.stdout, out.stdout[-2000:]
