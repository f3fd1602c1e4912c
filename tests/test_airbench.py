"""airbench94 as a config: its net, and the general features its recipe needs (data-
dependent init, parameter groups with frozen / time-limited / scaled-lr parameters, the
warm-up-from-a-fraction linear schedule, the summed loss, lookahead, target accuracy).

Each reference below is airbench94.py's own arithmetic, rewritten in numpy/torch."""

from __future__ import annotations

import json
import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from cifar_jax import config as config_lib
from cifar_jax import losses, models, optim, parallel, runs, steps, train, validation
from cifar_jax.config import load_config_file
from cifar_jax.errors import ConfigError
from cifar_jax.models import airbench, layers

AIRBENCH94 = "configs/airbench94.py"
TOTAL_STEPS, STEPS_PER_EPOCH = 476, 48  # ceil(48 * 9.9), 50_000 // 1024


def _airbench_config(**overrides) -> ml_collections.ConfigDict:
    config = load_config_file(AIRBENCH94)
    config.update(overrides)
    return config


# ------------------------------------------------------------------------------- the net


def test_param_count_is_airbench94s():
    """1,972,792: sum(p.numel() for p in make_net().parameters()) of airbench94.py
    (frozen whitening kernel and BN scales included, as torch counts them)."""
    model = models.build_model(_airbench_config(), 10)
    variables = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3))))
    assert models.count_trainable_params(variables) == 1_972_792
    torch = pytest.importorskip("torch")
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 24, 2, bias=True),
        *[
            m
            for cin, w in ((24, 64), (64, 256), (256, 256))
            for m in (
                torch.nn.Conv2d(cin, w, 3, padding=1, bias=False),
                torch.nn.BatchNorm2d(w),
                torch.nn.Conv2d(w, w, 3, padding=1, bias=False),
                torch.nn.BatchNorm2d(w),
            )
        ],
        torch.nn.Linear(256, 10, bias=False),
    )
    assert sum(p.numel() for p in net.parameters()) == 1_972_792


@pytest.fixture(scope="module")
def tiny_net():
    """airbench94 at widths (8, 16, 16): model, optimizer, and its seed-0 train state
    without data init (initializing compiles for ~15 s on 2 cores: done once)."""
    config = _airbench_config(widths=(8, 16, 16))
    model = models.build_model(config, 10)
    tx = optim.create_optimizer(config, optax.constant_schedule(0.1), 476, 48)
    replicated = NamedSharding(parallel.create_mesh(), P())
    return model, tx, replicated, steps.create_train_state(model, tx, 0, replicated)


def test_output_shape_and_logit_scale(tiny_net):
    model, _, _, state = tiny_net
    x = jax.random.normal(jax.random.key(1), (4, 32, 32, 3))
    both = jax.jit(
        lambda v, x: (model.apply(v, x), model.clone(logit_scale=1.0).apply(v, x))
    )  # one compile, not one per op
    logits, unscaled = both(state.variables(), x)
    assert logits.shape == (4, 10)
    np.testing.assert_allclose(logits * 9, unscaled, rtol=1e-5, atol=1e-6)


def test_dirac_init_passes_the_first_channels_through():
    conv = layers.conv(12, 3, in_features=5, padding=1, use_bias=False, dirac=True)
    x = jax.random.normal(jax.random.key(0), (2, 8, 8, 5))
    variables = jax.jit(conv.init)(jax.random.key(1), x)  # one compile, not one per op
    y = jax.jit(conv.apply)(variables, x)
    np.testing.assert_allclose(y[..., :5], x, atol=1e-6)
    # The other filters keep torch's uniform init: not zero, within 1/sqrt(fan_in).
    rest = variables["params"]["kernel"][..., 5:]
    assert 0 < float(jnp.abs(rest).max()) <= 1 / math.sqrt(5 * 9)


def test_other_fields_are_rejected_for_airbench():
    with pytest.raises(ConfigError, match="stem_width"):
        models.build_model(_airbench_config(stem_width=8), 10)
    with pytest.raises(ConfigError, match="widths"):
        models.build_model(_airbench_config(widths=(8, 16)), 10)


def _torch_whitening(images: np.ndarray, eps: float = 5e-4) -> np.ndarray:
    """airbench94.py's get_patches / get_whitening_parameters / init_whitening_conv."""
    torch = pytest.importorskip("torch")
    x = torch.tensor(images).permute(0, 3, 1, 2).double()
    c, h, w = 3, 2, 2
    patches = x.unfold(2, h, 1).unfold(3, w, 1).transpose(1, 3).reshape(-1, c, h, w)
    flat = patches.reshape(len(patches), -1)
    cov = flat.T @ flat / len(flat)
    values, vectors = torch.linalg.eigh(cov, UPLO="U")
    values, vectors = (
        values.flip(0).view(-1, 1, 1, 1),
        vectors.T.reshape(c * h * w, c, h, w).flip(0),
    )
    scaled = vectors / torch.sqrt(values + eps)
    return torch.cat((scaled, -scaled)).numpy()  # OIHW


def test_whitening_kernel_matches_airbench():
    rng = np.random.default_rng(0)
    # Correlated channels and neighbours, like images: distinct eigenvalues.
    base = rng.normal(size=(64, 33, 33, 3)) @ np.array([[1, 0.5, 0.2], [0, 1, 0.3], [0, 0, 1]])
    images = (base[:, 1:, 1:] + 0.6 * base[:, :-1, :-1]).astype(np.float32)
    ours = np.transpose(airbench.whitening_kernel(images), (3, 2, 0, 1))  # HWIO -> OIHW
    ref = _torch_whitening(images)
    assert ours.shape == ref.shape == (24, 3, 2, 2)
    # Eigenvectors are defined up to sign: compare each filter up to its sign.
    for o in range(24):
        a, b = ours[o].ravel(), ref[o].ravel()
        sign = np.sign(a @ b)
        np.testing.assert_allclose(a, sign * b, rtol=1e-4, atol=1e-5)
    # And it whitens: the first 12 filters' responses are decorrelated.
    flat = np.stack(
        [images[:, i : 31 + i, j : 31 + j, :] for i in range(2) for j in range(2)], axis=-1
    ).reshape(-1, 12)
    responses = flat @ ours[:12].reshape(12, 12).T
    cov = responses.T @ responses / len(responses)
    np.testing.assert_allclose(cov - np.diag(np.diag(cov)), 0, atol=1e-3)


def test_train_state_uses_the_data_init_and_lookahead_start(tiny_net):
    model, tx, replicated, plain = tiny_net
    images = np.random.default_rng(0).normal(size=(16, 32, 32, 3)).astype(np.float32)
    state = steps.create_train_state(model, tx, 0, replicated, init_images=images, lookahead=True)
    np.testing.assert_allclose(
        state.params["whiten"]["kernel"], airbench.whitening_kernel(images), rtol=1e-6
    )
    np.testing.assert_array_equal(
        state.lookahead["params"]["whiten"]["kernel"], state.params["whiten"]["kernel"]
    )
    assert plain.lookahead is None
    assert not np.allclose(plain.params["whiten"]["kernel"], state.params["whiten"]["kernel"])


# ------------------------------------------------------------------- parameter groups


def _group_config(**groups) -> ml_collections.ConfigDict:
    config = config_lib.base_config()
    config.update(dict(optimizer="sgd", momentum=0.0, weight_decay=0.0, learning_rate=0.1))
    config.param_groups = ml_collections.ConfigDict(groups)
    return config


def _params():
    return {
        "whiten": {"kernel": jnp.ones((2, 2)), "bias": jnp.ones(2)},
        "group1": {
            "norm1": {"scale": jnp.ones(3), "bias": jnp.ones(3)},
            "conv1": {"kernel": jnp.ones(4)},
        },
    }


def test_groups_freeze_scale_and_time_limit_parameters():
    config = _group_config(
        frozen={"match": "whiten/kernel,*/norm*/scale", "trainable_epochs": 0},
        whiten_bias={"match": "whiten/bias", "trainable_epochs": 2},
        norm_bias={"match": "*/norm*/bias", "lr_scale": 64.0},
    )
    steps_per_epoch = 3
    tx = optim.create_optimizer(config, optax.constant_schedule(0.1), 100, steps_per_epoch)
    params = _params()
    state = tx.init(params)
    grads = jax.tree.map(jnp.ones_like, params)
    for step in range(10):
        updates, state = tx.update(grads, state, params)
        assert float(jnp.abs(updates["whiten"]["kernel"]).max()) == 0
        assert float(jnp.abs(updates["group1"]["norm1"]["scale"]).max()) == 0
        np.testing.assert_allclose(updates["group1"]["conv1"]["kernel"], -0.1)
        np.testing.assert_allclose(updates["group1"]["norm1"]["bias"], -6.4, rtol=1e-6)
        # Trained for 2 epochs = 6 steps, then never again.
        expected = -0.1 if step < 2 * steps_per_epoch else 0.0
        np.testing.assert_allclose(updates["whiten"]["bias"], expected)


def test_group_weight_decay_scale_is_coupled_l2_like_torch():
    """torch SGD param group (lr=s*lr, weight_decay=wd*k): update = -s*lr*(g + wd*k*p)."""
    config = _group_config(
        norm_bias={"match": "*/norm*/bias", "lr_scale": 4.0, "weight_decay_scale": 0.25}
    )
    config.weight_decay = 0.5
    tx = optim.create_optimizer(config, optax.constant_schedule(0.1), 10, 1)
    params = jax.tree.map(lambda p: 2 * p, _params())
    grads = jax.tree.map(jnp.ones_like, params)
    updates, _ = tx.update(grads, tx.init(params), params)
    np.testing.assert_allclose(updates["group1"]["norm1"]["bias"], -0.4 * (1 + 0.5 * 0.25 * 2))
    np.testing.assert_allclose(updates["group1"]["conv1"]["kernel"], -0.1 * (1 + 0.5 * 2))


def test_overlapping_or_empty_groups_are_clear_errors():
    params = _params()
    both = _group_config(a={"match": "whiten/*"}, b={"match": "*/bias"})
    with pytest.raises(ConfigError, match="matched by param_groups"):
        optim.param_labels(optim.param_groups(both), params)
    typo = _group_config(a={"match": "*/nrom*/bias"})
    with pytest.raises(ConfigError, match=r"match no parameter.*group1/norm1/bias"):
        optim.param_labels(optim.param_groups(typo), params)
    with pytest.raises(ConfigError, match="lr_scale"):
        optim.param_groups(_group_config(a={"match": "x", "lr_sclae": 2.0}))
    with pytest.raises(ConfigError):
        validation.validate_config(_airbench_config(param_groups={"a": {"match": ""}}))


def test_no_groups_keeps_the_optimizer_state_layout():
    """Checkpoints of runs without groups must still restore: same state tree as before."""
    config = _group_config()
    config.weight_decay = 1e-4
    schedule = optax.constant_schedule(0.1)
    tx = optim.create_optimizer(config, schedule)
    expected = optax.chain(optax.add_decayed_weights(1e-4), optax.sgd(schedule, None))
    params = _params()
    assert jax.tree.structure(tx.init(params)) == jax.tree.structure(expected.init(params))


# --------------------------------------------------------------------------- schedule


def test_schedule_is_airbench94s_get_lr():
    config = _airbench_config()
    total, per_epoch = TOTAL_STEPS, STEPS_PER_EPOCH
    schedule = optim.learning_rate_schedule(config, per_epoch, total)

    def get_lr(step):  # airbench94.py, times the base lr (LambdaLR)
        warmup_steps = int(total * 0.23)
        if step < warmup_steps:
            frac = step / warmup_steps
            return 0.2 * (1 - frac) + 1.0 * frac
        frac = (step - warmup_steps) / (total - warmup_steps)
        return 1.0 * (1 - frac) + 0.07 * frac

    ours = np.array([float(schedule(s)) for s in range(total)])
    ref = np.array([get_lr(s) * config.learning_rate for s in range(total)])
    np.testing.assert_allclose(ours, ref, rtol=1e-5)


# ------------------------------------------------------------------------------- loss


def test_summed_loss_is_batch_size_times_the_mean():
    config = config_lib.base_config()
    logits = jax.random.normal(jax.random.key(0), (16, 10))
    labels = jnp.arange(16) % 10
    mean_loss, _ = losses.make_loss(config).total(logits, labels, {})
    config.loss_reduction = "sum"
    sum_loss, _ = losses.make_loss(config).total(logits, labels, {})
    np.testing.assert_allclose(sum_loss, 16 * mean_loss, rtol=1e-6)


# -------------------------------------------------------------------------- lookahead


def test_lookahead_matches_airbench_lookahead_state():
    """Random 'updates' applied to a state, with our Lookahead after each step, give the
    same weights as airbench's LookaheadState schedule (every 5 steps, and at the end)."""
    total, every = 23, 5
    lookahead = steps.Lookahead(every, total, 0.95**5, 3.0)
    rng = np.random.default_rng(0)
    w0 = rng.normal(size=4).astype(np.float32)
    state = steps.TrainState(
        step=jnp.zeros((), jnp.int32),
        params={"w": jnp.asarray(w0)},
        batch_stats={"m": jnp.asarray(w0[:2])},
        opt_state=(),
        rng=jnp.zeros(2, jnp.uint32),
        val_tracker=None,
        lookahead={"params": {"w": jnp.asarray(w0)}, "batch_stats": {"m": jnp.asarray(w0[:2])}},
    )
    net, ema = w0.astype(np.float64).copy(), w0.astype(np.float64).copy()
    alpha = 0.95**5 * (np.arange(total + 1) / total) ** 3
    for step in range(1, total + 1):
        delta = rng.normal(size=4).astype(np.float32)
        state = state.replace(
            step=state.step + 1,
            params={"w": state.params["w"] + delta},
            batch_stats={"m": state.batch_stats["m"] + delta[:2]},
        )
        state = lookahead.apply(state)
        net = net + delta
        if step % every == 0:
            ema = ema + (1 - alpha[step]) * (net - ema)  # lerp_(net, 1 - decay)
            net = ema.copy()
        if step >= total:
            net = ema.copy()
        np.testing.assert_allclose(state.params["w"], net, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(state.batch_stats["m"], net[:2], rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------- the recipe, tiny


# The airbench recipes at tiny width on synthetic data (also tests/test_muon.py).
TINY_RECIPE = dict(
    data_source="synthetic",
    synthetic_train_examples=512,
    synthetic_test_examples=200,
    widths=(8, 16, 16),
    batch_size=128,
    eval_batch_size=100,
    data_init_examples=256,
    log_every_steps=4,
)


def _tiny_recipe(**overrides) -> ml_collections.ConfigDict:
    """12 steps (3 epochs) for every test here: the same schedule, so one compiled train
    step serves them all (the compilation cache, tests/conftest.py)."""
    return _airbench_config(
        **{**TINY_RECIPE, "num_train_steps": 12, "warmup_epochs": 1.0, **overrides}
    )


def test_tiny_recipe_trains_with_frozen_parts_and_tta(tmp_path):
    config = _tiny_recipe()
    results = train.train_and_evaluate(config, str(tmp_path))
    assert results["steps"] == 12 and "test_accuracy_tta" in results
    assert results["test_tta_seconds"] > 0
    from cifar_jax import checkpoint

    manager = checkpoint.create_manager(str(tmp_path), 3)
    model = models.build_model(config, 10)
    tx = optim.create_optimizer(config, optax.constant_schedule(0.1), 12, 4)
    replicated = NamedSharding(parallel.create_mesh(), P())
    # Shapes and shardings to restore into: a real initial state would compile the init.
    abstract = jax.eval_shape(
        lambda: steps.create_train_state(model, tx, config.seed, replicated, lookahead=True)
    )
    template = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated), abstract
    )
    _, final, _ = checkpoint.restore_latest(manager, template)
    manager.close()
    for name in ("norm1", "norm2"):
        np.testing.assert_array_equal(final.params["group1"][name]["scale"], 1.0)
    # The weights are the lookahead average after the last step.
    averaged = jax.tree.leaves(final.lookahead["params"])
    for a, b in zip(jax.tree.leaves(final.params), averaged, strict=True):
        np.testing.assert_array_equal(a, b)
    # The finished run loads for evaluate / predict / export: its 1-epoch warm-up in a
    # 12-step budget once made the abstract rebuild refuse the schedule.
    run = runs.load_run(str(tmp_path))
    assert run.step == 12
    for a, b in zip(jax.tree.leaves(run.state.params), jax.tree.leaves(final.params), strict=True):
        np.testing.assert_array_equal(a, b)


def test_target_accuracy_stops_early_and_reports_time(tmp_path):
    config = _tiny_recipe(target_accuracy=0.01)
    results = train.train_and_evaluate(config, str(tmp_path))
    assert results["target_reached"] is True
    assert results["target_split"] == "test" and results["target_epoch"] == 1
    assert results["steps"] == results["target_step"] == 4  # 512 // 128 steps per epoch
    assert 0 < results["time_to_target_train_seconds"] < results["train_seconds"] + 1
    # From process start: everything before the target's evaluation, and no more.
    time = results["time"]
    before = time["startup_seconds"] + time["data_seconds"] + time["init_seconds"]
    assert before < results["time_to_target_seconds"] <= time["wall_seconds"]
    # Rerunning the finished workdir returns its results without training on.
    again = train.train_and_evaluate(config, str(tmp_path))
    assert again["steps"] == 4
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["time_to_target_seconds"] == results["time_to_target_seconds"]


def test_target_accuracy_not_reached_is_reported(tmp_path):
    config = _tiny_recipe(target_accuracy=0.999)
    results = train.train_and_evaluate(config, str(tmp_path))
    assert results["target_reached"] is False and results["steps"] == 12
    assert "time_to_target_seconds" not in results
