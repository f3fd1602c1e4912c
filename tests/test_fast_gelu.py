"""The exact GELU with the hand-written CPU gradient (fast_ops.gelu, the models' "gelu"):
torch's values, the exact derivative, float32 math for bfloat16, and a lever that turns it
off."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cifar_jax.kernels import fast_ops, levers
from cifar_jax.models import layers

on_cpu = jax.default_backend() == "cpu"


def _exact(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """GELU and its derivative in float64: x * Phi(x), Phi(x) + x * phi(x)."""
    x = np.asarray(x, np.float64)
    cdf = 0.5 * (1 + np.vectorize(math.erf)(x / math.sqrt(2)))
    pdf = np.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)
    return x * cdf, cdf + x * pdf


def _points(dtype) -> jax.Array:
    # Both tails, around 0 and the minimum near -0.75; every value exact in bfloat16.
    rng = np.random.default_rng(0)
    x = np.concatenate([np.linspace(-9, 9, 721), rng.standard_normal(2000) * 2])
    return jnp.asarray(x.astype(jnp.bfloat16), dtype)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16], ids=["f32", "bf16"])
def test_gelu_values_and_gradient_are_the_exact_functions(dtype):
    """Catches a wrong derivative (the x * phi(x) term dropped, a wrong constant), a value
    that is not torch's exact form (the tanh approximation differs by up to ~1e-3), and
    bfloat16 math inside (it would be off by several bfloat16 steps)."""
    x = _points(dtype)
    ct = jnp.asarray(np.random.default_rng(1).standard_normal(x.shape), dtype)
    y, vjp = jax.vjp(jax.jit(fast_ops.gelu), x)
    (dx,) = vjp(ct)
    assert y.dtype == dx.dtype == dtype
    value, slope = _exact(x)
    expected_dx = np.asarray(ct, np.float64) * slope
    # float32: within a few float32 ulps of the largest value; bfloat16: rounded once
    # from float32 math, so within half a bfloat16 step (2**-8 relative) plus float32 noise.
    rtol = 2e-6 if dtype == jnp.float32 else 2.0**-8 + 1e-6
    for got, want in ((y, value), (dx, expected_dx)):
        got = np.asarray(got, np.float64)
        np.testing.assert_allclose(got, want, rtol=rtol, atol=1e-6 * np.max(np.abs(want)))


def test_gelu_equals_jax_gelu_in_float32_and_its_gradient():
    """The models' gelu is jax.nn.gelu(approximate=False), forward and backward, within
    float32 rounding: the CPU form uses erf (torch's formula), jax's erfc, so far in the
    negative tail (x < -5) ours rounds values of ~1e-7 to 0 as torch does."""
    x = _points(jnp.float32)
    ct = jnp.asarray(np.random.default_rng(2).standard_normal(x.shape), jnp.float32)
    ours = jax.vjp(jax.jit(fast_ops.gelu), x)
    ref = jax.vjp(fast_ops.gelu_exact, x)
    np.testing.assert_allclose(ours[0], ref[0], rtol=1e-6, atol=5e-7)
    np.testing.assert_allclose(ours[1](ct)[0], ref[1](ct)[0], rtol=1e-5, atol=1e-6)


@pytest.mark.skipif(not on_cpu, reason="the hand-written gradient is CPU-only")
def test_cpu_traces_the_custom_gradient_and_the_lever_turns_it_off():
    """The models' activation "gelu" is the CPU form (one saved input, a custom_vjp), and
    ``fast_gelu=False`` traces jax.nn.gelu's own autodiff, with equal values."""
    x = _points(jnp.float32)

    def jaxpr():
        return str(jax.make_jaxpr(layers.Activation("gelu").apply)({}, x))

    assert "custom_vjp_call" in jaxpr()
    with levers.switched(fast_gelu=False):
        assert "custom_vjp_call" not in jaxpr()
        plain = layers.Activation("gelu").apply({}, x)
    np.testing.assert_allclose(layers.Activation("gelu").apply({}, x), plain, rtol=1e-6, atol=5e-7)
