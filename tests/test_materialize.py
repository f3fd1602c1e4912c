"""fast_ops.conv_input (the conv inputs kept in memory, lever ``materialize``): bit-identical
values and gradients, and on CPU the kernel-gradient transposes of a residual net read
stored activations instead of recomputing them."""

import os
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cifar_jax.kernels import fast_ops, levers
from cifar_jax.models import blocks, resnet

on_cpu = jax.default_backend() == "cpu"


@pytest.fixture
def xla_convs():
    """conv_input acts only before XLA's convs. On the 1-device CPU test process oneDNN's
    convs are on and conv_input returns its input, so a test run there would compare x
    with x; this switches oneDNN off (as ``CIFAR_JAX_ONEDNN=0`` or a machine without it)."""
    with levers.switched(onednn=False):
        yield


def _run(f, *args):
    """(divisions in the compiled, optimized program of ``f``: conv_input's ``x / one``;
    the outputs of that program)."""
    compiled = jax.jit(f).lower(*args).compile()
    return compiled.as_text().count(" divide("), compiled(*args)


@pytest.mark.parametrize("special", [None, np.inf, -np.inf, np.nan])
def test_conv_input_is_the_identity_in_values_and_gradients(special, xla_convs):
    """Catches a conv_input that changes values or gradients (a "1" that is not exactly 1
    where x is inf or NaN, e.g. ``x * 0 + 1``), and, through the division count, one
    that stopped acting (returns x: the values would then pass trivially)."""
    x = np.random.default_rng(0).standard_normal((2, 3, 3, 32)).astype(np.float32)
    if special is not None:  # the "1" is built from x itself: must stay 1 there too
        x[0, 0, 0, 0] = special
        x[1, 2, 2, 5] = special
    x = jnp.asarray(x)
    g = jnp.asarray(np.random.default_rng(1).standard_normal(x.shape), jnp.float32)

    # Fresh functions: jit would reuse a trace of fast_ops.conv_input made with oneDNN on.
    def forward(x):
        return fast_ops.conv_input(x)

    def backward(x, g):  # x an argument: a closed-over x lets XLA fold the 1 away
        return jax.vjp(forward, x)[1](g)[0]

    (forward_divides, y), (backward_divides, grad) = _run(forward, x), _run(backward, x, g)
    # The division survives XLA's optimizations, in the forward and the gradient.
    assert (forward_divides > 0) == (backward_divides > 0) == on_cpu
    np.testing.assert_array_equal(np.asarray(y), np.asarray(x))
    np.testing.assert_array_equal(np.asarray(grad), np.asarray(g))


def _divides(x) -> bool:
    # A fresh function each time: jit would reuse a trace made under other levers.
    return "divide" in jax.jit(lambda x: fast_ops.conv_input(x)).lower(x).as_text()


def test_conv_input_leaves_narrow_maps_alone(xla_convs):
    assert not _divides(jnp.ones((2, 4, 4, fast_ops.MATERIALIZE_MIN_CHANNELS - 1)))
    wide = jnp.ones((2, 4, 4, fast_ops.MATERIALIZE_MIN_CHANNELS))
    assert _divides(wide) == on_cpu
    with levers.switched(materialize=False):  # the lever bench_levers A/Bs
        assert not _divides(wide)


@pytest.mark.skipif(not on_cpu, reason="oneDNN convs are CPU-only")
def test_conv_input_is_a_no_op_before_onednn_convs(monkeypatch):
    """oneDNN's kernel gradients read NHWC directly: no transposes to protect."""
    monkeypatch.setattr(fast_ops.onednn, "available", lambda: True)  # as where it built
    assert not _divides(jnp.ones((2, 4, 4, fast_ops.MATERIALIZE_MIN_CHANNELS)))


def _conv_net_divides(net, x) -> int:
    """Divisions (conv_input's) in the compiled train gradient of ``net`` on ``x``."""
    variables = net.init(jax.random.key(0), x)

    def loss(params):
        out, _ = net.apply({**variables, "params": params}, x, train=True, mutable=["batch_stats"])
        return jnp.sum(out**2)

    return _run(jax.grad(loss), variables["params"])[0]


@pytest.mark.skipif(not on_cpu, reason="the CPU fusion behaviour it guards")
def test_every_wide_xla_conv_input_is_kept_by_the_conv_itself(xla_convs):
    """The models hold no materialize call: the conv hook applies conv_input to each input
    of 32+ channels it gives to XLA's conv, here one conv after the stem in a plain CNN."""
    from cifar_jax.models import convnet

    net = convnet.ConvNet(
        num_classes=10, stages=(convnet.Stage(32, convs=2, pool=False),), conv_batch_norm=True
    )
    x = jnp.ones((4, 8, 8, 3))
    assert _conv_net_divides(net, x) > 0
    with levers.switched(materialize=False):
        assert _conv_net_divides(net, x) == 0


def _transpose_fusions_recomputing_activations(hlo: str) -> list[str]:
    """Names of fused computations that transpose and also evaluate a ReLU (``maximum``):
    the activation recomputed in transposed order instead of read from memory."""
    bad = []
    for name, body in re.findall(r"\n(%\S+) \([^\n]*\{\n(.*?)\n\}", hlo, flags=re.S):
        if " transpose(" in body and " maximum(" in body:
            bad.append(name)
    return bad


@pytest.mark.skipif(not on_cpu, reason="the CPU fusion behaviour it guards")
def test_residual_net_kernel_gradients_read_stored_activations(xla_convs):
    net = resnet.CifarResNet(
        num_classes=10, stem_width=32, widths=(32, 64), stage_blocks=(2, 1), strides=(1, 2)
    )
    x = jnp.asarray(np.random.default_rng(2).standard_normal((8, 8, 8, 3)), jnp.float32)
    variables = net.init(jax.random.key(0), x)

    def compiled_hlo():
        def loss(params):
            out, _ = net.apply(
                {**variables, "params": params}, x, train=True, mutable=["batch_stats"]
            )
            return jnp.sum(out**2)

        return jax.jit(jax.grad(loss)).lower(variables["params"]).compile().as_text()

    assert _transpose_fusions_recomputing_activations(compiled_hlo()) == []
    # Without it, XLA:CPU duplicates the ReLU chains into the transposes (what made
    # resnet_small 25% slower): the check above can fail.
    with levers.switched(materialize=False):
        assert _transpose_fusions_recomputing_activations(compiled_hlo()) != []


def test_basic_block_output_unchanged_by_conv_input(xla_convs):
    """A whole BasicBlock (its convs' kept inputs, before XLA's convs): the loss and
    gradients equal those without them. Catches a conv_input that changes
    values inside a model; the division counts make sure the first program really has it
    (with oneDNN's convs both would be the same program)."""
    block = blocks.BasicBlock(32, stride=2)
    x = jnp.asarray(np.random.default_rng(3).standard_normal((4, 8, 8, 16)), jnp.float32)
    variables = block.init(jax.random.key(1), x)

    def value_and_grads():
        def loss(params, x):
            out, _ = block.apply(
                {**variables, "params": params}, x, train=True, mutable=["batch_stats"]
            )
            return jnp.sum(jnp.sin(out))

        return _run(jax.value_and_grad(loss, argnums=(0, 1)), variables["params"], x)

    divides, fast = value_and_grads()
    with levers.switched(materialize=False):
        plain_divides, plain = value_and_grads()
    # The convs' kept inputs, in the forward and the backward pass.
    assert (divides > plain_divides) == on_cpu, (divides, plain_divides)
    for a, b in zip(jax.tree.leaves(fast), jax.tree.leaves(plain), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


_SHARDED = """
import jax, jax.numpy as jnp, numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from cifar_jax.kernels import fast_ops
mesh = Mesh(np.array(jax.devices()), ("data",))
x = jax.device_put(jnp.ones((16, 4, 4, 32)), NamedSharding(mesh, PartitionSpec("data")))
hlo = jax.jit(fast_ops.conv_input).lower(x).compile().as_text()
print(len(jax.devices()), "divide" in hlo, "all-reduce" in hlo or "all-gather" in hlo)
"""


def test_conv_input_adds_no_communication_on_a_sharded_batch():
    """Built elementwise: a batch-sharded activation needs no all-reduce for its "1" (a 1
    taken from the first element cost one per call on an 8-device mesh)."""
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8")
    out = subprocess.run(
        [sys.executable, "-c", _SHARDED], env=env, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["8", "True", "False"]
