"""Process set-up: XLA flags are added once and never override the user's own; the host
allocator keeps freed memory for reuse."""

import json
import os
import platform
import subprocess
import sys
import textwrap

import pytest

from cifar_jax import runtime

# The process set-up of GPU runs: these also run on a GPU host (scripts/gpu_check.sh).
pytestmark = pytest.mark.accelerator


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
    xla_flags.setenv("JAX_PLATFORMS", "cpu")  # a CPU run, also on a GPU host
    status = runtime.configure_process(
        reuse_host_memory=False, cpu_fast_conv=True, deterministic=True
    )
    assert status.startswith("CPU run (JAX_PLATFORMS=cpu)") and "set" in status
    assert runtime.host_allocator() == "default (reuse_host_memory=False)"
    flags = os.environ["XLA_FLAGS"]
    assert runtime.CPU_FAST_CONV_FLAG in flags and "--xla_gpu_deterministic_ops=true" in flags


_GPU_RUN = textwrap.dedent(
    """
    import json, os
    from cifar_jax import runtime
    status = runtime.configure_process(reuse_host_memory=True, deterministic=True)
    print(json.dumps({"status": status, "allocator": runtime.host_allocator(),
                      "flags": os.environ.get("XLA_FLAGS", "")}))
    """
)


def test_a_gpu_run_gets_no_cpu_only_setup():
    """No XLA:CPU flag and no malloc change in a process that will run on a GPU."""
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["JAX_PLATFORMS"] = "cuda"
    out = subprocess.run([sys.executable, "-c", _GPU_RUN], env=env, capture_output=True,
                         text=True, timeout=120)  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["status"].startswith("cuda run (JAX_PLATFORMS=cuda)")
    assert result["allocator"].startswith("default (a cuda run")
    assert "ynn" not in result["flags"] and "--xla_gpu_deterministic_ops=true" in result["flags"]


def test_run_platform_reads_the_plugins_and_devices(monkeypatch):
    import importlib.metadata

    class Dist:
        def __init__(self, name):
            self.metadata = {"Name": name}

    monkeypatch.setenv("JAX_PLATFORMS", "cuda,cpu")
    assert runtime.run_platform()[0] == "cuda"
    monkeypatch.delenv("JAX_PLATFORMS")
    monkeypatch.setattr(importlib.metadata, "distributions",
                        lambda: [Dist("jax"), Dist("jax-cuda12-plugin")])  # fmt: skip
    monkeypatch.setattr(runtime.os.path, "exists", lambda p: p == "/dev/nvidia0")
    platform_name, why = runtime.run_platform()
    assert platform_name == "cuda" and "jax-cuda12-plugin" in why and "/dev/nvidia0" in why
    monkeypatch.setattr(runtime.os.path, "exists", lambda p: False)  # plugin, no GPU
    assert runtime.run_platform()[0] == "cpu"


_UNKNOWN_FLAG = textwrap.dedent(
    """
    import os
    from cifar_jax import runtime
    runtime.CPU_FAST_CONV_FLAG = "--xla_cpu_no_such_flag_for_cifar_jax_tests=1"
    print(runtime.configure_process(reuse_host_memory=False))
    import jax
    print(jax.devices()[0].platform, os.environ.get("XLA_FLAGS", ""))
    """
)


def test_a_flag_the_installed_jaxlib_does_not_know_is_not_set():
    """XLA aborts on an unknown flag: the package checks before it adds one."""
    assert runtime.xla_flag_known(runtime.CPU_FAST_CONV_FLAG)
    assert not runtime.xla_flag_known("--xla_cpu_no_such_flag_for_cifar_jax_tests=1")
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["JAX_PLATFORMS"] = "cpu"
    out = subprocess.run([sys.executable, "-c", _UNKNOWN_FLAG], env=env, capture_output=True,
                         text=True, timeout=120)  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    status, devices = out.stdout.strip().splitlines()[-2:]
    assert "does not know it" in status
    assert devices.strip() == "cpu" and "no_such_flag" not in devices


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

    from cifar_jax import config as config_lib
    from cifar_jax import models

    config = config_lib.base_config()
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


def test_an_isa_limited_run_says_so_in_its_cpu(monkeypatch):
    """A number timed under ONEDNN_MAX_CPU_ISA / --xla_cpu_max_isa is an AVX2 code path on
    a newer CPU: the CPU every result records names the limits, and names none without."""
    for name in ("ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_enable_fast_math=false")
    assert runtime.isa_limits() == []
    assert "limited" not in runtime.cpu_description()
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_enable_fast_math=false --xla_cpu_max_isa=AVX2")
    assert runtime.isa_limits() == ["ONEDNN_MAX_CPU_ISA=AVX2", "--xla_cpu_max_isa=AVX2"]
    assert runtime.cpu_description().endswith(
        "kernels limited by ONEDNN_MAX_CPU_ISA=AVX2, --xla_cpu_max_isa=AVX2"
    )


def test_the_cpu_names_amx_only_where_the_cpu_exposes_it(monkeypatch, tmp_path):
    """bf16 speed hangs on AMX, and one VM exposed it where another of the same family and
    model did not: the CPU a record names says which."""
    import pathlib

    real_read = pathlib.Path.read_text
    for flags, expected in (("fpu avx2 avx512f amx_bf16 amx_tile", ", AVX512, AMX)"),
                            ("fpu avx2 avx512f", ", AVX512)")):  # fmt: skip
        text = f"model name\t: Xeon\ncpu family\t: 6\nmodel\t\t: 207\nflags\t\t: {flags}\n"

        def fake(self, *a, text=text, **k):
            return text if str(self) == "/proc/cpuinfo" else real_read(self, *a, **k)

        monkeypatch.setattr(pathlib.Path, "read_text", fake)
        for name in ("ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY", "XLA_FLAGS"):
            monkeypatch.delenv(name, raising=False)
        assert runtime.cpu_description() == "Xeon (family 6, model 207" + expected
