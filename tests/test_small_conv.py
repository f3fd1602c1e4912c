"""conv_small_cin (direct tap-sum conv) equals lax.conv_general_dilated: values and grads."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from cifar_jax.kernels import small_conv

# (cin, cout, kernel, stride, padding, size, batch)
CASES = [
    (3, 6, 5, 1, 0, 12, 4),  # lenet conv1 shape family (5x5 valid)
    (3, 8, 3, 1, 1, 10, 3),  # 3x3 same (seed stems)
    (3, 4, 3, 2, 1, 9, 2),  # strided, odd size
    (1, 2, 1, 1, 0, 5, 2),  # 1x1
]


def _ref(x, w, stride, pad):
    return lax.conv_general_dilated(
        x, w, (stride, stride), ((pad, pad), (pad, pad)), dimension_numbers=("NHWC", "HWIO", "NHWC")
    )


def _data(cin, cout, k, size, n):
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((n, size, size, cin)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((k, k, cin, cout)) * 0.2, jnp.float32)
    b = jnp.asarray(rng.standard_normal((cout,)) * 0.1, jnp.float32)
    return x, w, b


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"c{c[0]}-{c[1]}_k{c[2]}_s{c[3]}_p{c[4]}")
@pytest.mark.parametrize("use_bias", [True, False], ids=["bias", "nobias"])
def test_values_and_grads(case, use_bias):
    cin, cout, k, stride, pad, size, n = case
    x, w, b = _data(cin, cout, k, size, n)

    def model(conv):
        def f(x, w, b):
            y = conv(x, w, stride, pad)
            if use_bias:
                y = y + b
            return jax.nn.relu(y)

        return f

    got = jax.jit(model(small_conv.conv_small_cin))(x, w, b)
    ref = jax.jit(model(_ref))(x, w, b)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)

    g = jnp.asarray(np.random.default_rng(1).standard_normal(ref.shape), jnp.float32)

    def grads(conv):
        def loss(x, w, b):
            return jnp.sum(model(conv)(x, w, b) * g)

        return jax.jit(jax.grad(loss, (0, 1, 2)))(x, w, b)

    for a, r in zip(grads(small_conv.conv_small_cin), grads(_ref), strict=True):
        np.testing.assert_allclose(a, r, rtol=1e-5, atol=1e-5)


def test_kernel_grad_only_and_unjitted():
    x, w, _ = _data(3, 6, 5, 12, 2)
    dw = jax.grad(lambda w: jnp.sum(small_conv.conv_small_cin(x, w, 1, 0) ** 2))(w)
    dw_ref = jax.grad(lambda w: jnp.sum(_ref(x, w, 1, 0) ** 2))(w)
    np.testing.assert_allclose(dw, dw_ref, rtol=1e-5, atol=1e-4)


def test_nan_kernel_branch_same_values():
    x, w, _ = _data(3, 6, 5, 12, 2)
    w = w.at[0, 0, 0, 0].set(jnp.nan)
    got = jax.jit(small_conv.conv_small_cin, static_argnums=(2, 3))(x, w, 1, 0)
    ref = _ref(x, w, 1, 0)
    np.testing.assert_array_equal(jnp.isnan(got), jnp.isnan(ref))


def test_use_small_cin_only_measured_shape():
    assert small_conv.use_small_cin((512, 32, 32, 3), (5, 5, 3, 6), 1, 0)
    assert small_conv.use_small_cin((128, 32, 32, 3), (5, 5, 3, 6), 1, 0)
    assert not small_conv.use_small_cin((128, 32, 32, 3), (3, 3, 3, 32), 1, 1)
    assert not small_conv.use_small_cin((128, 32, 32, 3), (3, 3, 3, 64), 1, 1)
    assert not small_conv.use_small_cin((128, 14, 14, 6), (5, 5, 6, 16), 1, 0)
    assert not small_conv.use_small_cin((128, 32, 32, 3), (5, 5, 3, 6), 2, 0)
    assert not small_conv.use_small_cin((8, 32, 32, 3), (5, 5, 3, 6), 1, 0)
