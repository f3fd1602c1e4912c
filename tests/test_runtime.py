"""Process set-up: XLA flags are added once and never override the user's own; the host
allocator keeps freed memory for reuse."""

import json
import platform
import subprocess
import sys
import textwrap

import pytest

from cifar_jax import runtime


@pytest.fixture
def xla_flags(monkeypatch):
    monkeypatch.delenv("XLA_FLAGS", raising=False)
    return monkeypatch


def test_cpu_conv_flag_is_added_once(xla_flags):
    import os

    runtime.configure_xla_flags(True)
    runtime.configure_xla_flags(True)
    assert os.environ["XLA_FLAGS"].count("ynn_fusion_type") == 1


def test_user_setting_wins(xla_flags):
    import os

    xla_flags.setenv("XLA_FLAGS", "--xla_cpu_experimental_ynn_fusion_type=individual_convolution")
    runtime.configure_xla_flags(True)
    assert (
        os.environ["XLA_FLAGS"] == "--xla_cpu_experimental_ynn_fusion_type=individual_convolution"
    )


def test_configure_process_sets_up_the_allocator_and_the_flags(xla_flags):
    """The one call training and the benchmarks make before JAX starts."""
    import os

    xla_flags.setattr(runtime, "_HOST_ALLOCATOR", {"status": "default (not configured)"})
    runtime.configure_process(reuse_host_memory=False, cpu_fast_conv=True, deterministic=True)
    assert runtime.host_allocator() == "default (reuse_host_memory=False)"
    flags = os.environ["XLA_FLAGS"]
    assert runtime.CPU_FAST_CONV_FLAG in flags and "--xla_gpu_deterministic_ops=true" in flags


def test_deterministic_adds_the_gpu_flags(xla_flags):
    import os

    runtime.configure_xla_flags(False, deterministic=True)
    flags = os.environ["XLA_FLAGS"]
    assert "--xla_gpu_deterministic_ops=true" in flags
    assert "--xla_gpu_exclude_nondeterministic_ops=true" in flags
    assert "ynn" not in flags


_FAULTS_SCRIPT = textwrap.dedent(
    """
    import ctypes, json, resource, sys
    from cifar_jax import runtime

    status = runtime.configure_host_allocator(sys.argv[1] == "reuse")
    libc = ctypes.CDLL(None)
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]

    def step():  # what XLA:CPU does per step: fresh 64 MB buffers, written, freed
        for _ in range(3):
            block = libc.malloc(64 * 2**20)
            ctypes.memset(block, 1, 64 * 2**20)
            libc.free(block)

    step()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(5):
        step()
    after = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    print(json.dumps({"status": status, "faults_per_step": (after - before) / 5}))
    """
)


@pytest.mark.skipif(
    sys.platform != "linux" or platform.libc_ver()[0] != "glibc", reason="glibc malloc only"
)
def test_host_allocator_reuses_freed_memory_instead_of_faulting_it_in_again():
    def run(mode):
        out = subprocess.run(
            [sys.executable, "-c", _FAULTS_SCRIPT, mode],
            capture_output=True,
            text=True,
            check=True,
        )
        return json.loads(out.stdout.strip().splitlines()[-1])

    default, reuse = run("default"), run("reuse")
    assert default["status"] == "default (reuse_host_memory=False)"
    assert reuse["status"] == "glibc, freed memory reused"
    # 3 x 64 MB of 4 kB pages = 49k faults per step when each block is mmap'd afresh.
    assert default["faults_per_step"] > 10_000
    assert reuse["faults_per_step"] < 100


def test_host_allocator_leaves_other_c_libraries_alone(monkeypatch):
    monkeypatch.setattr(runtime.platform, "libc_ver", lambda: ("", ""))
    assert runtime.configure_host_allocator(True).startswith("default (not glibc")
    assert runtime.host_allocator().startswith("default (not glibc")


def test_single_process_needs_no_distributed_runtime(xla_flags):
    for var in ("CIFAR_JAX_COORDINATOR", "CIFAR_JAX_NUM_PROCESSES", "CIFAR_JAX_DISTRIBUTED"):
        xla_flags.delenv(var, raising=False)
    assert runtime.initialize_distributed() is False


def _grad_hlo(deterministic: bool) -> str:
    """The lowered gradient of a max-pooling model, traced as if on a GPU backend."""
    import jax
    import jax.numpy as jnp

    from cifar_jax import config_base, models

    config = config_base.base_config()
    config.model, config.deterministic = "lenet", deterministic
    model = models.build_model(config, 10)
    x = jnp.zeros((2, 32, 32, 3))
    variables = jax.eval_shape(lambda: model.init(jax.random.key(0), x, train=False))

    def loss(params):
        return model.apply({**variables, "params": params}, x, train=False).sum()

    return jax.jit(jax.grad(loss)).lower(variables["params"]).as_text()


def test_deterministic_pooling_avoids_select_and_scatter(monkeypatch):
    import jax

    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    assert "select_and_scatter" in _grad_hlo(deterministic=False)
    assert "select_and_scatter" not in _grad_hlo(deterministic=True)
