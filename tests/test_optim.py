"""Optimizers and schedules match their definitions (PyTorch semantics)."""

import jax.numpy as jnp
import numpy as np
import optax
import pytest

from cifar_jax import config as config_lib
from cifar_jax import optim
from cifar_jax.errors import ConfigError


def _config(**kw):
    config = config_lib.base_config()
    config.update(kw)
    return config


def test_cosine_schedule_values():
    schedule = optim.learning_rate_schedule(_config(learning_rate=0.1), 10, 100)
    assert float(schedule(0)) == pytest.approx(0.1)
    assert float(schedule(50)) == pytest.approx(0.05, rel=1e-5)
    assert float(schedule(100)) == pytest.approx(0.0, abs=1e-7)


def test_warmup_then_cosine():
    config = _config(learning_rate=0.2, warmup_epochs=1.0, final_lr_fraction=0.1)
    schedule = optim.learning_rate_schedule(config, 10, 110)
    assert float(schedule(0)) == 0.0
    assert float(schedule(5)) == pytest.approx(0.1)
    assert float(schedule(10)) == pytest.approx(0.2)
    assert float(schedule(110)) == pytest.approx(0.02, rel=1e-4)


def test_constant_schedule():
    schedule = optim.learning_rate_schedule(_config(schedule="constant", learning_rate=3e-4), 5, 50)
    assert float(schedule(0)) == float(schedule(49)) == pytest.approx(3e-4)


@pytest.mark.parametrize(
    "field,value,match",
    [
        ("learning_rate", 0.0, "learning_rate"),
        ("learning_rate", -1.0, "learning_rate"),
        ("schedule", "bogus", "schedule"),
        ("warmup_epochs", 20.0, "warmup"),
    ],
)
def test_schedule_errors(field, value, match):
    with pytest.raises(ConfigError, match=match):
        optim.learning_rate_schedule(_config(**{field: value}), 10, 100)


def test_unknown_optimizer():
    with pytest.raises(ConfigError, match="optimizer"):
        optim.create_optimizer(_config(optimizer="lion"), optax.constant_schedule(0.1))


def _one_update(config, params, grads, steps=1):
    tx = optim.create_optimizer(config, optax.constant_schedule(config.learning_rate))
    state = tx.init(params)
    for _ in range(steps):
        updates, state = tx.update(grads, state, params)
        params = optax.apply_updates(params, updates)
    return params


def test_sgd_momentum_with_coupled_weight_decay_matches_torch_formula():
    p, g = jnp.array([1.0, -2.0]), jnp.array([0.5, 0.5])
    config = _config(optimizer="sgd", learning_rate=0.1, momentum=0.9, weight_decay=0.01)
    # torch: d = g + wd * p; buf = m * buf + d; p -= lr * buf (two steps).
    p_ref, buf = np.array([1.0, -2.0]), np.zeros(2)
    for _ in range(2):
        d = 0.5 + 0.01 * p_ref
        buf = 0.9 * buf + d
        p_ref = p_ref - 0.1 * buf
    np.testing.assert_allclose(_one_update(config, p, g, steps=2), p_ref, rtol=1e-6)


def test_nesterov_differs_from_plain_momentum():
    p, g = jnp.array([1.0]), jnp.array([1.0])
    plain = _one_update(_config(momentum=0.9), p, g, steps=2)
    nesterov = _one_update(_config(momentum=0.9, nesterov=True), p, g, steps=2)
    # torch nesterov: step 1 uses g + m*g = 1.9; step 2 buf=1.9, d = 1 + 0.9*1.9 = 2.71.
    np.testing.assert_allclose(nesterov, [1.0 - 0.1 * 1.9 - 0.1 * 2.71], rtol=1e-6)
    assert not np.allclose(plain, nesterov)


def test_adamw_decay_is_decoupled_and_scaled_by_lr():
    p, g = jnp.array([2.0]), jnp.array([0.0])
    config = _config(optimizer="adamw", learning_rate=0.1, weight_decay=0.5)
    # Zero gradient: Adam's step is 0, only the decay acts: p -= lr * wd * p.
    np.testing.assert_allclose(_one_update(config, p, g), [2.0 - 0.1 * 0.5 * 2.0], rtol=1e-6)


def test_grad_clipping_bounds_the_update():
    p, g = jnp.zeros(2), jnp.array([30.0, 40.0])  # norm 50
    config = _config(optimizer="sgd", momentum=0.0, learning_rate=1.0, grad_clip_norm=1.0)
    np.testing.assert_allclose(_one_update(config, p, g), [-0.6, -0.8], rtol=1e-6)


def _torch_rmsprop(p, grads, lr, alpha=0.99, eps=1e-8, momentum=0.0, weight_decay=0.0):
    """torch.optim.RMSprop(centered=False), written out."""
    p, v, buf = np.array(p, np.float64), np.zeros(len(p)), np.zeros(len(p))
    for g in grads:
        g = np.asarray(g, np.float64) + weight_decay * p
        v = alpha * v + (1 - alpha) * g * g
        step = g / (np.sqrt(v) + eps)  # eps outside the square root
        if momentum:
            buf = momentum * buf + step
            step = buf
        p = p - lr * step
    return p


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_rmsprop_matches_torch_formula(momentum):
    p = jnp.array([1.0, -2.0, 0.5])
    grads = [jnp.array([0.3, -1e-3, 2.0]) * (k + 1) for k in range(3)]
    config = _config(
        optimizer="rmsprop", learning_rate=0.01, rmsprop_momentum=momentum, weight_decay=0.01
    )
    tx = optim.create_optimizer(config, optax.constant_schedule(0.01))
    state = tx.init(p)
    for g in grads:
        updates, state = tx.update(g, state, p)
        p = optax.apply_updates(p, updates)
    want = _torch_rmsprop([1.0, -2.0, 0.5], grads, 0.01, momentum=momentum, weight_decay=0.01)
    np.testing.assert_allclose(p, want, rtol=1e-5)


def test_rmsprop_eps_is_added_after_the_square_root():
    # A tiny gradient shows where eps goes: first step g / (sqrt(0.01 g^2) + eps).
    p, g = jnp.zeros(1), jnp.array([1e-8])
    config = _config(optimizer="rmsprop", learning_rate=1.0, rmsprop_eps=1e-8)
    tx = optim.create_optimizer(config, optax.constant_schedule(1.0))
    updates, _ = tx.update(g, tx.init(p), p)
    want = -1e-8 / (np.sqrt(0.01 * 1e-16) + 1e-8)  # 0.909; eps inside sqrt gives 1e-4
    np.testing.assert_allclose(updates, [want], rtol=1e-5)
