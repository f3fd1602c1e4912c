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
