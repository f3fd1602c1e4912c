"""BatchNorm with the hand-written CPU gradient (fast_ops.batch_norm_train, layers.BatchNorm)
equals flax's nn.BatchNorm: variables, values, running statistics and gradients."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from model_grads import narrow_model, train_loss_and_grads

from cifar_jax.kernels import fast_ops, levers
from cifar_jax.models import layers

on_cpu = jax.default_backend() == "cpu"


def _close(a, b, rtol=2e-5):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        scale = float(np.max(np.abs(y))) or 1.0
        np.testing.assert_allclose(x, y, rtol=rtol, atol=rtol * scale)


def _loss_fn(module, variables, cotangent):
    """jit(value_and_grad) of sum(relu(bn(x)) * cotangent) in params and x; the updated
    batch_stats as aux."""

    def loss(params, x):
        y, updates = module.apply({**variables, "params": params}, x, mutable=["batch_stats"])
        return jnp.sum(jax.nn.relu(y) * cotangent), updates

    return jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))


# (shape, train, fast, momentum, epsilon). ``fast`` picks the training form: the
# hand-written CPU gradient (True) or the autodiff form GPU/TPU and bf16 run (False). In
# eval (use_running_average) there is no training form, so eval cases have fast=None: a
# train x fast product gave 3 eval cases twice, identical programs (the old 6 of 12).
CASES = [
    ((8, 6, 6, 5), True, True, 0.8, 1e-5),  # NHWC activations
    ((8, 6, 6, 5), True, False, 0.8, 1e-5),
    ((32, 7), True, True, 0.9, 1e-5),  # 2-D (features of a dense layer), default momentum
    ((32, 7), True, False, 0.9, 1e-5),
    ((4, 3, 5, 16), True, True, 0.0, 1e-3),  # momentum 0: running stats = batch stats
    ((4, 3, 5, 16), True, False, 0.0, 1e-3),
    ((8, 6, 6, 5), False, None, 0.8, 1e-5),  # eval: running statistics, not the batch's
    ((32, 7), False, None, 0.9, 1e-5),
    ((4, 3, 5, 16), False, None, 0.0, 1e-3),  # epsilon reaches the eval form too
]


def _case_id(case):
    shape, train, fast, momentum, epsilon = case
    form = "eval" if not train else "train-fast" if fast else "train-autodiff"
    return f"{form}-{'x'.join(map(str, shape))}-m{momentum}-eps{epsilon}"


def test_cases_are_distinct():
    """Every case a different program: no repeats, and ``fast`` only where it matters."""
    assert len(set(CASES)) == len(CASES)
    assert all((fast is None) == (not train) for _, train, fast, _, _ in CASES)


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_batch_norm_equals_flax(case, monkeypatch):
    """layers.BatchNorm equals flax's nn.BatchNorm in variables, loss, running statistics
    and gradients. Catches a wrong hand-written gradient (train-fast), a wrong running
    average update (the momentum cases, 0 included), an epsilon not passed on, and an
    eval form that uses or updates batch statistics."""
    shape, train, fast, momentum, epsilon = case
    if fast and not on_cpu:
        pytest.skip("the hand-written gradient is CPU-only")
    if fast is False:  # the autodiff form that GPU/TPU (and bf16) run
        monkeypatch.setattr(fast_ops, "use_fast_batch_norm", lambda x: False)
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal(shape) * 3 + 1, jnp.float32)
    cotangent = jnp.asarray(rng.standard_normal(shape), jnp.float32)
    kwargs = dict(use_running_average=not train, momentum=momentum, epsilon=epsilon)
    ref, new = nn.BatchNorm(**kwargs), layers.BatchNorm(**kwargs)
    init = ref.init(jax.random.key(0), x)
    # Same variable names, shapes and initial values: checkpoints are interchangeable.
    _close(new.init(jax.random.key(0), x), init, rtol=0)
    # Non-trivial scale, bias and running statistics.
    variables = jax.tree.map(
        lambda v: v + jnp.asarray(rng.uniform(0.2, 0.5, v.shape), v.dtype), init
    )

    def program():
        apply = lambda x: new.apply(variables, x, mutable=["batch_stats"])  # noqa: E731
        return str(jax.make_jaxpr(apply)(x))

    # The form under test is the one traced: the hand-written gradient is a custom_vjp.
    traced = program()
    assert ("custom_vjp_call" in traced) == bool(fast)
    if not train:  # no training form, so the lever cannot change the eval program
        with monkeypatch.context() as m:
            lever = fast_ops.use_fast_batch_norm
            m.setattr(fast_ops, "use_fast_batch_norm", lambda x: not lever(x))
            assert program() == traced
    (ref_loss, ref_stats), ref_grads = _loss_fn(ref, variables, cotangent)(variables["params"], x)
    (loss, stats), grads = _loss_fn(new, variables, cotangent)(variables["params"], x)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-5)
    _close(stats, ref_stats, rtol=1e-6)  # running mean/var updated with the momentum
    _close(grads, ref_grads)
    old, moved = variables["batch_stats"], stats["batch_stats"]
    if train:  # the running statistics moved towards the batch's
        assert not np.allclose(moved["mean"], old["mean"])
        if momentum == 0.0:  # ... all the way
            axes = tuple(range(len(shape) - 1))
            _close(moved["mean"], np.mean(np.asarray(x), axis=axes), rtol=1e-6)
    else:  # eval leaves them alone
        _close(moved, old, rtol=0)


@pytest.mark.skipif(not on_cpu, reason="the hand-written gradient is CPU-only")
def test_cpu_uses_the_hand_written_gradient_and_gpu_form_does_not():
    x = jnp.ones((4, 3, 3, 2))
    scale, bias = jnp.ones(2), jnp.zeros(2)

    def jaxpr():
        return str(jax.make_jaxpr(lambda x: fast_ops.batch_norm_train(x, scale, bias, 1e-5))(x))

    assert "custom_vjp_call" in jaxpr()
    assert fast_ops.use_fast_batch_norm(x.astype(jnp.bfloat16))  # bf16 activations too
    assert not fast_ops.use_fast_batch_norm(x.astype(jnp.float16))
    with levers.switched(fast_bn=False):
        assert "custom_vjp_call" not in jaxpr()
    assert "custom_vjp_call" in jaxpr()


def test_gradient_through_the_returned_batch_statistics():
    # The batch mean and variance are outputs too; a loss that uses them must get their
    # gradient (they are symbolic zeros in training, where only the running averages
    # read them).
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.standard_normal((6, 4, 4, 3)) * 2 - 1, jnp.float32)
    scale = jnp.asarray(rng.uniform(0.5, 1.5, 3), jnp.float32)
    bias = jnp.asarray(rng.standard_normal(3), jnp.float32)
    weights = jnp.asarray(rng.standard_normal((3, 3)), jnp.float32)

    def loss(bn, x, scale, bias):
        y, mean, var = bn(x, scale, bias, 1e-5)
        return jnp.sum(jnp.sin(y)) + jnp.dot(weights[0], mean) + jnp.dot(weights[1], var**2)

    fast = jax.grad(lambda *a: loss(fast_ops.batch_norm_train, *a), argnums=(0, 1, 2))
    plain = jax.grad(lambda *a: loss(fast_ops._bn_train_autodiff, *a), argnums=(0, 1, 2))
    _close(jax.jit(fast)(x, scale, bias), jax.jit(plain)(x, scale, bias), rtol=1e-5)


def test_whole_model_loss_and_gradients_equal_autodiff_batch_norm(monkeypatch):
    net, variables, x = narrow_model("c100_bn")
    fast = train_loss_and_grads(net, variables, x)(variables["params"])
    monkeypatch.setattr(fast_ops, "use_fast_batch_norm", lambda x: False)
    plain = train_loss_and_grads(net, variables, x)(variables["params"])
    np.testing.assert_allclose(fast[0], plain[0], rtol=1e-5)
    # A conv bias followed by BatchNorm has a gradient of exactly 0 in exact arithmetic:
    # both forms give float noise there, so tolerances are relative to the largest
    # gradient of the model.
    largest = max(float(np.max(np.abs(g))) for g in jax.tree.leaves(plain[1]))
    for a, b in zip(jax.tree.leaves(fast[1]), jax.tree.leaves(plain[1]), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * largest)


@pytest.mark.skipif(not on_cpu, reason="the hand-written gradient is CPU-only")
def test_bfloat16_activations_take_the_hand_written_gradient_in_float32():
    """bf16 activations (half_precision): the hand-written gradient computes in float32 and
    rounds dx once, so it matches the float32 gradient of the same (bf16-exact) input to
    bfloat16 rounding. Catches sums accumulated in bfloat16 (far off over 8*6*6 values), a
    dx of the wrong dtype, and scale/bias gradients not in float32."""
    rng = np.random.default_rng(3)
    shape = (8, 6, 6, 16)
    x32 = jnp.asarray(rng.standard_normal(shape) * 3 + 1, jnp.bfloat16).astype(jnp.float32)
    ct = jnp.asarray(rng.standard_normal(shape), jnp.bfloat16)
    scale = jnp.asarray(rng.uniform(0.5, 1.5, 16), jnp.float32)
    bias = jnp.asarray(rng.standard_normal(16), jnp.float32)

    def grads(x, dtype):
        def loss(x, scale, bias):
            y = fast_ops.batch_norm_train(x, scale, bias, 1e-5, dtype)[0]
            return jnp.sum(y.astype(jnp.float32) * ct.astype(jnp.float32))

        return jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(x, scale, bias)

    jaxpr = str(
        jax.make_jaxpr(lambda x: fast_ops.batch_norm_train(x, scale, bias, 1e-5))(
            x32.astype(jnp.bfloat16)
        )
    )
    assert "custom_vjp_call" in jaxpr
    dx, dscale, dbias = grads(x32.astype(jnp.bfloat16), jnp.bfloat16)
    assert dx.dtype == jnp.bfloat16 and dscale.dtype == dbias.dtype == jnp.float32
    ref = grads(x32, jnp.float32)
    for got, want in zip((dx, dscale, dbias), ref, strict=True):
        want = np.asarray(want)
        np.testing.assert_allclose(
            np.asarray(got, np.float32), want, rtol=2**-8, atol=2**-8 * np.max(np.abs(want))
        )
