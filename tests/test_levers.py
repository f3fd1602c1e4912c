"""kernels.levers: declared switches read at trace time; flipping one changes the traced
program, and the default is every CPU form on."""

import dataclasses

import jax
import jax.numpy as jnp
import pytest

from cifar_jax import kernels
from cifar_jax.kernels import levers, onednn

on_cpu = jax.default_backend() == "cpu"


def test_the_default_is_every_lever_on():
    assert levers.current() == levers.DEFAULT == levers.Levers()
    assert all(getattr(levers.DEFAULT, name) is True for name in levers.NAMES)
    assert levers.NAMES == (
        "onednn", "materialize", "small_conv", "pool_broadcast", "cpu_pool", "im2col", "fast_bn",
        "fast_gelu",
    )  # fmt: skip
    with pytest.raises(dataclasses.FrozenInstanceError):
        levers.DEFAULT.onednn = False  # type: ignore[misc]


def test_switched_nests_and_restores():
    with levers.switched(onednn=False) as outer:
        assert outer == levers.current() == levers.Levers(onednn=False)
        with levers.switched(fast_bn=False):
            assert levers.current() == levers.Levers(onednn=False, fast_bn=False)
        assert levers.current() == outer
    assert levers.current() == levers.DEFAULT


def test_unknown_or_non_bool_levers_are_refused_with_the_valid_names():
    with pytest.raises(ValueError, match="unknown lever.*onednn, materialize"):
        with levers.switched(one_dnn=False):
            pass
    with pytest.raises(ValueError, match="True/False"):
        with levers.switched(onednn=0):
            pass
    assert levers.current() == levers.DEFAULT


def _step(x, w):
    # As flax's nn.Conv calls it (ConvDimensionNumbers, not the strings).
    numbers = jax.lax.conv_dimension_numbers(x.shape, w.shape, ("NHWC", "HWIO", "NHWC"))
    y = kernels.conv_general_dilated(x, w, (1, 1), ((1, 1), (1, 1)), dimension_numbers=numbers)
    return jnp.sum(y**2)


def _lowered(fn, *args) -> str:
    # A fresh jit per call: jax.jit reuses a trace whatever the levers are now.
    return jax.jit(kernels.platform_step(fn)).lower(*args).as_text()


@pytest.mark.skipif(not on_cpu, reason="the oneDNN conv is a CPU custom call")
def test_the_onednn_lever_removes_the_custom_call_from_the_lowered_step():
    if not onednn.available():
        pytest.skip(f"oneDNN kernel unavailable here: {onednn.unavailable_reason()}")
    x, w = jnp.ones((2, 8, 8, 16)), jnp.ones((3, 3, 16, 16))
    grad = jax.grad(_step, argnums=(0, 1))
    default = _lowered(grad, x, w)
    assert onednn.TARGET_NAME in default
    with levers.switched(onednn=False):
        off = _lowered(grad, x, w)
    assert onednn.TARGET_NAME not in off and "convolution" in off
    assert _lowered(grad, x, w).count(onednn.TARGET_NAME) == default.count(onednn.TARGET_NAME)


def test_the_cpu_pool_lever_brings_back_select_and_scatter():
    x = jnp.ones((2, 8, 8, 4))
    grad = jax.grad(lambda x: jnp.sum(kernels.max_pool2x2(x)))
    assert ("select_and_scatter" in _lowered(grad, x)) == (not on_cpu)
    with levers.switched(cpu_pool=False):
        assert "select_and_scatter" in _lowered(grad, x)
