"""The CPU formulations of max-pool and conv equal the plain XLA ops (values and grads)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax
from model_grads import narrow_model, train_loss_and_grads

from cifar_jax.kernels import fast_ops, levers, onednn
from cifar_jax.models import layers


def conv_reference(x: jax.Array, kernel: jax.Array, stride: int, padding: int) -> jax.Array:
    """Plain XLA convolution, NHWC x HWIO, symmetric zero padding (what nn.Conv computes)."""
    return lax.conv_general_dilated(
        x,
        kernel,
        (stride, stride),
        ((padding, padding), (padding, padding)),
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
    )


def conv_1x1_matmul(x: jax.Array, kernel: jax.Array, stride: int, padding: int) -> jax.Array:
    """A 1x1 convolution as a (strided) subsample and one matmul: measured and rejected (no
    difference to whole steps, docs/performance.md); kept here as a checked formulation."""
    if padding:
        x = jnp.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    if stride > 1:
        x = x[:, ::stride, ::stride, :]
    return jnp.einsum("nhwc,co->nhwo", x, kernel[0, 0])


# (in_channels, out_channels, kernel, stride, padding, size): every conv of the seed models.
SEED_CONVS = [
    (3, 6, 5, 1, 0, 32),  # lenet conv1 (5x5 valid)
    (6, 16, 5, 1, 0, 14),  # lenet conv2
    (3, 16, 5, 1, 2, 32),  # deepnet conv1 (5x5 pad 2)
    (16, 16, 5, 1, 2, 16),  # deepnet conv2
    (3, 8, 3, 1, 1, 32),  # stems / plain CNNs: 3x3 same
    (8, 16, 3, 1, 1, 16),  # 3x3 same
    (8, 16, 3, 2, 1, 16),  # BasicBlock conv1 with stride 2
    (8, 16, 3, 2, 1, 15),  # ... on an odd size
    (6, 16, 1, 1, 0, 14),  # 1x1 projection, stride 1 (basenet_residual)
    (8, 16, 1, 2, 0, 16),  # 1x1 projection, stride 2 (ResNets)
    (8, 16, 1, 2, 0, 15),  # ... on an odd size
]


def _ids(c):
    return f"c{c[0]}-{c[1]}_k{c[2]}_s{c[3]}_p{c[4]}_{c[5]}px"


def _check_conv(fn, cin, cout, k, stride, pad, size):
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((4, size, size, cin)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((k, k, cin, cout)) * 0.2, jnp.float32)
    ref = conv_reference(x, w, stride, pad)
    got = jax.jit(fn, static_argnums=(2, 3))(x, w, stride, pad)
    assert got.shape == ref.shape
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)

    ct = jnp.asarray(rng.standard_normal(ref.shape), jnp.float32)

    def loss(conv):
        return lambda x, w: jnp.sum(conv(x, w, stride, pad) * ct)

    gx_ref, gw_ref = jax.grad(loss(conv_reference), argnums=(0, 1))(x, w)
    gx, gw = jax.jit(jax.grad(loss(fn), argnums=(0, 1)))(x, w)
    np.testing.assert_allclose(gx, gx_ref, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(gw, gw_ref, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("cin,cout,k,stride,pad,size", SEED_CONVS, ids=map(_ids, SEED_CONVS))
def test_im2col_conv_equals_xla_conv_forward_and_gradients(cin, cout, k, stride, pad, size):
    _check_conv(fast_ops.conv_im2col, cin, cout, k, stride, pad, size)


ONE_BY_ONE = [c for c in SEED_CONVS if c[2] == 1]


@pytest.mark.parametrize("cin,cout,k,stride,pad,size", ONE_BY_ONE, ids=map(_ids, ONE_BY_ONE))
def test_1x1_matmul_conv_equals_xla_conv_forward_and_gradients(cin, cout, k, stride, pad, size):
    _check_conv(conv_1x1_matmul, cin, cout, k, stride, pad, size)


# Convs on maps smaller than the kernel (VGG's 2x2 stage) run as im2col on CPU.
SMALL_MAPS = [(16, 32, 3, 1, 1, 2), (8, 16, 3, 1, 1, 1), (8, 16, 3, 2, 1, 2), (4, 8, 5, 1, 2, 3)]


@pytest.mark.parametrize("cin,cout,k,stride,pad,size", SMALL_MAPS, ids=map(_ids, SMALL_MAPS))
def test_conv_hook_equals_xla_conv_on_small_maps(cin, cout, k, stride, pad, size):
    def hook(x, w, stride, pad):
        dn = lax.conv_dimension_numbers(x.shape, w.shape, ("NHWC", "HWIO", "NHWC"))
        pads = ((pad, pad), (pad, pad))
        return fast_ops.conv_general_dilated(
            x, w, (stride, stride), pads, (1, 1), (1, 1), dimension_numbers=dn
        )

    assert fast_ops.use_im2col((4, size, size, cin), (k, k, cin, cout))
    _check_conv(hook, cin, cout, k, stride, pad, size)


def test_conv_hook_keeps_xla_conv_elsewhere(monkeypatch):
    """Without oneDNN (tests/test_onednn.py covers it): XLA's conv, im2col on small maps."""
    monkeypatch.setattr(onednn, "use_onednn", lambda *args: False)
    x, w = jnp.ones((2, 8, 8, 4)), jnp.ones((3, 3, 4, 5))
    dn = lax.conv_dimension_numbers(x.shape, w.shape, ("NHWC", "HWIO", "NHWC"))
    for pads in (((1, 1), (1, 1)), ((0, 1), (1, 0))):
        hlo = (
            jax.jit(
                lambda x, w, pads=pads: fast_ops.conv_general_dilated(
                    x, w, (1, 1), pads, (1, 1), (1, 1), dimension_numbers=dn
                )
            )
            .lower(x, w)
            .as_text()
        )
        assert "convolution" in hlo
    # A 2x2 map under a 3x3 kernel: no convolution op on CPU.
    small = jnp.ones((2, 2, 2, 4))
    conv = layers.conv(5, 3, in_features=4, padding=1)
    variables = conv.init(jax.random.key(0), small)
    hlo = jax.jit(conv.apply).lower(variables, small).as_text()
    assert ("convolution" in hlo) == (jax.default_backend() != "cpu")


def test_pool_layer_avoids_select_and_scatter_on_cpu():
    x = jnp.ones((2, 8, 8, 4))
    hlo = jax.jit(jax.grad(lambda x: layers.max_pool2x2(x).sum())).lower(x).as_text()
    on_cpu = jax.default_backend() == "cpu"
    assert ("select_and_scatter" in hlo) != on_cpu


@pytest.mark.parametrize(
    "shape",
    # both gradient forms: below and from fast_ops.POOL_BROADCAST_MIN_CHANNELS
    [(4, 28, 28, 6), (2, 16, 16, 32), (3, 7, 9, 5), (2, 2, 2, 1), (2, 6, 6, 15), (3, 5, 7, 16)],
)
def test_fast_max_pool_equals_window_pool(shape):
    x = jnp.asarray(np.random.default_rng(2).standard_normal(shape), jnp.float32)
    ct = jnp.asarray(
        np.random.default_rng(3).standard_normal(fast_ops.max_pool2x2_window(x).shape),
        jnp.float32,
    )
    np.testing.assert_array_equal(fast_ops.max_pool2x2_index(x), fast_ops.max_pool2x2_window(x))

    def loss(fn):
        return lambda x: jnp.sum(fn(x) * ct)

    g_ref = jax.grad(loss(fast_ops.max_pool2x2_window))(x)
    np.testing.assert_array_equal(jax.jit(jax.grad(loss(fast_ops.max_pool2x2_index)))(x), g_ref)
    np.testing.assert_array_equal(jax.grad(loss(layers.max_pool2x2))(x), g_ref)
    with levers.switched(pool_broadcast=False):  # the other gradient form, for every width
        np.testing.assert_array_equal(jax.jit(jax.grad(loss(fast_ops.max_pool2x2_index)))(x), g_ref)


@pytest.mark.parametrize("channels", [1, fast_ops.POOL_BROADCAST_MIN_CHANNELS])
def test_fast_max_pool_ties_go_to_the_first_max_like_torch(channels):
    """ReLU zeros tie often: the gradient goes to the first max of the window in row-major
    order (torch's MaxPool2d), not split over the ties."""
    x = jnp.zeros((1, 4, 4, channels)).at[0, 3, 2, 0].set(1.0).at[0, 2, 3, 0].set(1.0)
    g = jax.grad(lambda x: fast_ops.max_pool2x2_index(x).sum())(x)[0, :, :, 0]
    expect = np.zeros((4, 4))
    expect[0, 0] = expect[0, 2] = expect[2, 0] = 1.0  # all-zero windows: first element
    expect[2, 3] = 1.0  # two ones in the window: (2,3) comes before (3,2)
    np.testing.assert_array_equal(g, expect)
    np.testing.assert_array_equal(
        g, jax.grad(lambda x: fast_ops.max_pool2x2_window(x).sum())(x)[0, :, :, 0]
    )


@pytest.mark.parametrize("model", ["basenet_residual", "c100_bn"])
def test_models_train_gradients_equal_with_window_pooling(model):
    """A whole jitted model's gradients with the CPU pooling equal those with the window
    form (an equality-mask pooling gradient failed exactly this, not the unit tests)."""
    overrides = {}
    if model == "c100_bn":  # conv-BN-ReLU-pool, narrowed
        overrides = dict(widths=(8, 16), head_widths=(32,))
    net, variables, x = narrow_model(model, **overrides)

    def grads():
        return train_loss_and_grads(net, variables, x)(variables["params"])[1]

    fast = grads()
    with levers.switched(cpu_pool=False):
        plain = grads()
    for a, b in zip(jax.tree.leaves(fast), jax.tree.leaves(plain), strict=True):
        np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5)
