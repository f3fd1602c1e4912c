"""Training losses: cross-entropy, label smoothing, focal loss, the explicit L2 penalty,
and their wiring into the train step."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from cifar_jax import config as config_lib
from cifar_jax import losses, models, optim, parallel, steps
from cifar_jax.errors import ConfigError

LOGITS = jnp.array([[2.0, 0.0, -1.0], [0.5, 1.5, -0.5], [4.0, -2.0, 0.0]])
LABELS = jnp.array([0, 2, 0])


def _config(**kw):
    config = config_lib.base_config()
    config.update(kw)
    return config


def test_focal_equals_cross_entropy_at_gamma_zero():
    ce = losses.cross_entropy(LOGITS, LABELS)
    np.testing.assert_allclose(losses.focal_loss(LOGITS, LABELS, 0.0), ce, rtol=1e-6)
    soft = jnp.array([[0.7, 0.3, 0.0], [0.0, 0.5, 0.5], [1.0, 0.0, 0.0]])
    np.testing.assert_allclose(
        losses.focal_loss(LOGITS, soft, 0.0), losses.cross_entropy(LOGITS, soft), rtol=1e-6
    )


def test_focal_value_by_hand_and_below_ce_when_confidently_right():
    p = jax.nn.softmax(LOGITS)
    want = [-((1 - p[i, y]) ** 2) * math.log(p[i, y]) for i, y in enumerate([0, 2, 0])]
    focal = losses.focal_loss(LOGITS, LABELS, 2.0)
    np.testing.assert_allclose(focal, want, rtol=1e-5)
    ce = losses.cross_entropy(LOGITS, LABELS)
    # Example 2 is right with p = 0.997: focal is ~1e5 times smaller; example 1 is wrong
    # (p_y = 0.09): focal keeps most of the loss.
    assert focal[2] < 1e-3 * ce[2]
    assert focal[1] > 0.8 * ce[1]
    assert bool(jnp.all(focal <= ce))


def test_label_smoothing_value_by_hand():
    log_p = jax.nn.log_softmax(LOGITS[0])
    got = float(losses.cross_entropy(LOGITS[:1], LABELS[:1], 0.3)[0])
    # torch CrossEntropyLoss(label_smoothing=0.3), 3 classes: target 0.8 / 0.1 / 0.1.
    want = -(0.8 * log_p[0] + 0.1 * log_p[1] + 0.1 * log_p[2])
    assert got == pytest.approx(float(want), rel=1e-6)
    # The same smoothing applies to the focal loss.
    p = jnp.exp(log_p)
    focal = float(losses.focal_loss(LOGITS[:1], LABELS[:1], 1.0, 0.3)[0])
    want_focal = -sum(t * (1 - p[c]) * log_p[c] for c, t in enumerate([0.8, 0.1, 0.1]))
    assert focal == pytest.approx(float(want_focal), rel=1e-5)


def test_soft_targets_mix_linearly():
    a, b, lam = jnp.array([0, 1, 2]), jnp.array([2, 2, 1]), 0.3
    soft = lam * jax.nn.one_hot(a, 3) + (1 - lam) * jax.nn.one_hot(b, 3)
    for fn in (
        lambda t: losses.cross_entropy(LOGITS, t, 0.1),
        lambda t: losses.focal_loss(LOGITS, t, 2.0),
    ):
        np.testing.assert_allclose(fn(soft), lam * fn(a) + (1 - lam) * fn(b), rtol=1e-5)


def test_l2_penalty_value_by_hand():
    params = {"w": jnp.array([[1.0, -2.0], [0.5, 0.0]]), "b": {"x": jnp.array([3.0])}}
    # 1 + 4 + 0.25 + 0 + 9 = 14.25
    assert float(losses.l2_penalty(params, 0.01)) == pytest.approx(0.1425, rel=1e-6)
    assert float(losses.l2_penalty(params, 0.0)) == 0.0
    loss = losses.make_loss(_config(l2_penalty=0.01))
    total, per_example = loss.total(LOGITS, LABELS, params)
    np.testing.assert_allclose(per_example, losses.cross_entropy(LOGITS, LABELS), rtol=1e-6)
    assert float(total) == pytest.approx(float(per_example.mean()) + 0.1425, rel=1e-6)


def test_make_loss_picks_the_configured_loss():
    focal = losses.make_loss(_config(loss="focal", focal_gamma=2.0, label_smoothing=0.1))
    np.testing.assert_allclose(
        focal.per_example(LOGITS, LABELS), losses.focal_loss(LOGITS, LABELS, 2.0, 0.1), rtol=1e-6
    )
    ce = losses.make_loss(_config(label_smoothing=0.1))
    np.testing.assert_allclose(
        ce.per_example(LOGITS, LABELS), losses.cross_entropy(LOGITS, LABELS, 0.1), rtol=1e-6
    )
    with pytest.raises(ConfigError, match="loss='hinge'"):
        losses.make_loss(_config(loss="hinge"))
    with pytest.raises(ConfigError, match="focal_gamma"):
        losses.make_loss(_config(loss="focal", focal_gamma=-1.0))


def test_l2_penalty_reaches_the_gradient_of_the_train_step():
    config = _config(model="lenet", optimizer="sgd", momentum=0.0, learning_rate=0.1)
    model = models.build_model(config, 10)
    tx = optim.create_optimizer(config, optax.constant_schedule(0.1))
    state = steps.create_train_state(model, tx, 0, NamedSharding(parallel.create_mesh(), P()))
    mean, std = np.full(3, 0.5, np.float32), np.full(3, 0.25, np.float32)
    rng = np.random.default_rng(0)
    batch = {
        "image": jnp.asarray(rng.integers(0, 256, (8, 32, 32, 3), dtype=np.uint8)),
        "label": jnp.asarray(rng.integers(0, 10, 8, dtype=np.int32)),
    }

    def params_after_one_step(loss):
        step = jax.jit(steps.make_train_step(steps.Objective(model, mean, std, loss), tx))
        return jax.tree.map(np.asarray, step(state, batch)[0].params)

    lam = 0.05
    plain = params_after_one_step(losses.make_loss(_config()))
    penalized = params_after_one_step(losses.make_loss(_config(l2_penalty=lam)))
    # d/dp lam * p^2 = 2 lam p, so SGD moves by an extra -lr * 2 lam p.
    jax.tree.map(
        lambda a, b, p: np.testing.assert_allclose(b - a, -0.1 * 2 * lam * p, atol=2e-6),
        plain,
        penalized,
        jax.tree.map(np.asarray, state.params),
    )
