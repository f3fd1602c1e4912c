"""airbench94_muon (configs/airbench94_muon.py): Muon as a param-group optimizer, the
group features its recipe needs (per-group optimizer and momentum, a schedule compressed
into a group's trainable epochs), its net, and the recipe at tiny width.

The references are numpy transcriptions of airbench94_muon.py (KellerJordan/cifar10-airbench),
on torch's OIHW kernel layout, so a transposed reshape or a misplaced momentum would show.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from test_airbench import TINY_RECIPE

from cifar_jax import config as config_lib
from cifar_jax import models, optim, train, validation
from cifar_jax.config import load_config_file
from cifar_jax.errors import ConfigError

MUON_CONFIG = "configs/airbench94_muon.py"


def _airbench_newton_schulz(g: np.ndarray, steps: int = 3, eps: float = 1e-7) -> np.ndarray:
    """airbench94_muon.py's zeropower_via_newtonschulz5, in float64 instead of bfloat16."""
    a, b, c = (3.4445, -4.7750, 2.0315)
    x = g / (np.linalg.norm(g) + eps)
    if g.shape[0] > g.shape[1]:
        x = x.T
    for _ in range(steps):
        A = x @ x.T
        B = b * A + c * A @ A
        x = a * x + B @ x
    if g.shape[0] > g.shape[1]:
        x = x.T
    return x


@pytest.mark.parametrize("shape", [(64, 216), (40, 12)], ids=["wide", "tall"])
def test_newton_schulz_is_airbenchs(shape):
    g = np.random.default_rng(0).normal(size=shape)
    ours = optim.newton_schulz(jnp.asarray(g, jnp.float32), 3)
    np.testing.assert_allclose(ours, _airbench_newton_schulz(g), atol=2e-5)
    # Not a no-op: the singular values move towards 1 (airbench: into about (0.5, 1.5)).
    s = np.linalg.svd(np.asarray(ours), compute_uv=False)
    assert 0.3 < s.min() and s.max() < 1.6 and s.max() / s.min() < 5


def _group_config(**groups) -> ml_collections.ConfigDict:
    config = config_lib.base_config()
    config.update(
        dict(optimizer="sgd", momentum=0.85, nesterov=True, weight_decay=0.0, learning_rate=0.1)
    )
    config.param_groups = ml_collections.ConfigDict(groups)
    return config


def test_muon_group_matches_airbench_muon_step():
    """Four steps of torch Muon (airbench94_muon.py's class) on an OIHW kernel: momentum
    buffer, Nesterov, weight rescaled to norm sqrt(out) first, lr * orthogonalized update,
    lr falling linearly (its 1 - step / total)."""
    config = _group_config(
        filters={"match": "conv/kernel", "optimizer": "muon", "momentum": 0.6, "lr_scale": 2.4}
    )
    config.muon_ns_steps, config.muon_renormalize = 3, True
    total = 8
    schedule = optax.linear_schedule(0.1, 0.0, total)
    tx = optim.create_optimizer(config, schedule, total, 2)
    rng = np.random.default_rng(1)
    kernel_oihw = rng.normal(size=(8, 4, 3, 3))
    params = {"conv": {"kernel": jnp.asarray(kernel_oihw.transpose(2, 3, 1, 0), jnp.float32)}}
    state = tx.init(params)

    p, buf = kernel_oihw.copy(), np.zeros_like(kernel_oihw)
    for step in range(4):
        g = rng.normal(size=p.shape)
        grads = {"conv": {"kernel": jnp.asarray(g.transpose(2, 3, 1, 0), jnp.float32)}}
        updates, state = tx.update(grads, state, params)
        params = optax.apply_updates(params, updates)
        # airbench94_muon.py's Muon.step with lr = 0.24 * (1 - step / total):
        lr = 0.24 * (1 - step / total)
        buf = 0.6 * buf + g
        g = g + 0.6 * buf
        p = p * (len(p) ** 0.5 / np.linalg.norm(p))
        p = p - lr * _airbench_newton_schulz(g.reshape(len(g), -1)).reshape(g.shape)
        np.testing.assert_allclose(
            np.asarray(params["conv"]["kernel"]).transpose(3, 2, 0, 1), p, atol=2e-5
        )


def test_compressed_schedule_runs_within_the_trainable_epochs():
    """airbench94_muon's whitening bias: lr * (1 - step / its steps), then frozen."""
    config = _group_config(
        bias={"match": "bias", "trainable_epochs": 3, "compress_schedule": True},
    )
    config.momentum = 0.0
    total, per_epoch = 10, 2
    tx = optim.create_optimizer(config, optax.linear_schedule(0.1, 0.0, total), total, per_epoch)
    params = {"bias": jnp.zeros(3), "kernel": jnp.zeros((2, 2))}
    grads = jax.tree.map(jnp.ones_like, params)
    state = tx.init(params)
    for step in range(total):
        updates, state = tx.update(grads, state, params)
        want = -0.1 * (1 - step / 6) if step < 6 else 0.0
        np.testing.assert_allclose(updates["bias"], want, atol=1e-7)
        np.testing.assert_allclose(updates["kernel"], -0.1 * (1 - step / total), atol=1e-7)


def test_group_momentum_replaces_the_configs():
    config = _group_config(slow={"match": "a", "momentum": 0.6})
    config.nesterov = False
    tx = optim.create_optimizer(config, optax.constant_schedule(1.0), 10, 1)
    params = {"a": jnp.zeros(1), "b": jnp.zeros(1)}
    grads = jax.tree.map(jnp.ones_like, params)
    state = tx.init(params)
    for _ in range(2):
        updates, state = tx.update(grads, state, params)
    np.testing.assert_allclose(updates["a"], -1.6, rtol=1e-6)  # 1 + 0.6
    np.testing.assert_allclose(updates["b"], -1.85, rtol=1e-6)  # 1 + 0.85


def test_bad_muon_groups_are_clear_errors():
    bias_too = _group_config(f={"match": "*", "optimizer": "muon"})
    tx = optim.create_optimizer(bias_too, optax.constant_schedule(0.1), 10, 1)
    params = {"w": jnp.ones((2, 2)), "b": jnp.ones(2)}
    with pytest.raises(ConfigError, match="matrices and conv kernels only"):
        tx.update(params, tx.init(params), params)
    with pytest.raises(ConfigError, match="optimizer='lion' is not known"):
        optim.param_groups(_group_config(f={"match": "*", "optimizer": "lion"}))
    with pytest.raises(ConfigError, match="set trainable_epochs > 0"):
        optim.param_groups(_group_config(f={"match": "*", "compress_schedule": True}))
    with pytest.raises(ConfigError, match="momentum=1.5"):
        optim.param_groups(_group_config(f={"match": "*", "momentum": 1.5}))
    config = load_config_file(MUON_CONFIG)
    config.muon_ns_steps = 0
    with pytest.raises(ConfigError, match="muon_ns_steps=0"):
        validation.validate_config(config)


def test_config_learning_rates_and_decay_are_airbench_muons():
    """lr and torch weight_decay (= 2e-6 * 2000 / lr) of each of airbench's param groups."""
    config = load_config_file(MUON_CONFIG)
    groups = {g.name: g for g in optim.param_groups(config)}
    lr, wd = config.learning_rate, config.weight_decay
    for name, group_lr, group_wd in [("head", 0.67, 0.004 / 0.67), ("filters", 0.24, 0.0)]:
        np.testing.assert_allclose(lr * groups[name].lr_scale, group_lr)
        np.testing.assert_allclose(wd * groups[name].weight_decay_scale, group_wd, atol=1e-12)
    np.testing.assert_allclose((lr, wd), (0.053, 0.004 / 0.053))
    assert groups["filters"].momentum == 0.6 and config.momentum == 0.85
    assert config.num_train_steps == 200 and config.batch_size == 2000
    assert config.lookahead_every == 0 and config.final_lr_fraction == 0


def test_net_is_airbench94s_with_its_own_head():
    """Same layers and parameter count as airbench94; logits / 256 instead of / 9 and a
    head initialized to unit (unbiased) standard deviation."""
    config = load_config_file(MUON_CONFIG)
    muon_net = models.build_model(config, 10)
    config.model = "airbench94"
    plain_net = models.build_model(config, 10)
    x = jax.random.normal(jax.random.key(0), (2, 32, 32, 3))
    variables = muon_net.init(jax.random.key(1), x)
    assert models.count_trainable_params(variables) == 1_972_792
    np.testing.assert_allclose(jnp.std(variables["params"]["head"]["kernel"], ddof=1), 1.0, 1e-5)
    ratio = muon_net.apply(variables, x) / plain_net.apply(variables, x)
    np.testing.assert_allclose(ratio, 9 / 256, rtol=1e-4)


def test_tiny_recipe_trains_with_muon_and_tta(tmp_path):
    config = load_config_file(MUON_CONFIG)
    config.update(dict(TINY_RECIPE, num_train_steps=8))
    results = train.train_and_evaluate(config, str(tmp_path))
    assert results["steps"] == 8 and "test_accuracy_tta" in results
    assert np.isfinite(results["test_loss"])
