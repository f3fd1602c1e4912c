"""Process set-up: XLA flags are added once and never override the user's own."""

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


def test_deterministic_adds_the_gpu_flags(xla_flags):
    import os

    runtime.configure_xla_flags(False, deterministic=True)
    flags = os.environ["XLA_FLAGS"]
    assert "--xla_gpu_deterministic_ops=true" in flags
    assert "--xla_gpu_exclude_nondeterministic_ops=true" in flags
    assert "ynn" not in flags


def test_single_process_needs_no_distributed_runtime(xla_flags):
    for var in ("CIFAR_JAX_COORDINATOR", "CIFAR_JAX_NUM_PROCESSES", "CIFAR_JAX_DISTRIBUTED"):
        xla_flags.delenv(var, raising=False)
    assert runtime.initialize_distributed() is False
