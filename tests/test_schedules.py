"""Learning-rate schedules with PyTorch semantics: StepLR, OneCycleLR, ReduceLROnPlateau
(values by hand), and the plateau state surviving a checkpoint / resume."""

import json
import math

import jax.numpy as jnp
import numpy as np
import optax
import pytest
from test_train import tiny_config

from cifar_jax import config_base, optim, train


def _config(**kw):
    config = config_base.base_config()
    config.update(kw)
    return config


# ------------------------------------------------------------------------- StepLR


def test_step_schedule_values_at_known_steps():
    config = _config(schedule="step", learning_rate=0.1, lr_step_epochs=3, lr_step_gamma=0.1)
    schedule = optim.learning_rate_schedule(config, 10, 100)  # 10 steps per epoch
    # torch StepLR(step_size=3, gamma=0.1), stepped per epoch: epochs 0-2 at 0.1, 3-5 at
    # 0.01, 6-8 at 0.001, 9 at 1e-4.
    for step, want in ((0, 0.1), (29, 0.1), (30, 0.01), (59, 0.01), (60, 1e-3), (99, 1e-4)):
        assert float(schedule(step)) == pytest.approx(want, rel=1e-5), step


def test_step_schedule_counts_epochs_from_the_start_after_warmup():
    config = _config(
        schedule="step", learning_rate=0.1, lr_step_epochs=2, lr_step_gamma=0.5, warmup_epochs=1
    )
    schedule = optim.learning_rate_schedule(config, 10, 100)
    assert float(schedule(5)) == pytest.approx(0.05)  # warmup halfway
    assert float(schedule(10)) == pytest.approx(0.1)  # epoch 1: still the first period
    assert float(schedule(19)) == pytest.approx(0.1)
    assert float(schedule(20)) == pytest.approx(0.05)  # epoch 2 of the run


# --------------------------------------------------------------------- OneCycleLR


def test_onecycle_matches_torch_formula():
    peak, total = 0.1, 100
    schedule = optim.learning_rate_schedule(
        _config(schedule="onecycle", learning_rate=peak), 10, total
    )
    initial, final = peak / 25, peak / 25 / 1e4
    end_up, end_down = 0.3 * total - 1, total - 1

    def cos(start, end, pct):
        return end + (start - end) / 2 * (math.cos(math.pi * pct) + 1)

    assert float(schedule(0)) == pytest.approx(initial, rel=1e-5)
    assert float(schedule(29)) == pytest.approx(peak, rel=1e-5)
    assert float(schedule(99)) == pytest.approx(final, rel=1e-4)
    for step in (10, 50, 80):
        if step <= end_up:
            want = cos(initial, peak, step / end_up)
        else:
            want = cos(peak, final, (step - end_up) / (end_down - end_up))
        assert float(schedule(step)) == pytest.approx(want, rel=1e-5), step
    with pytest.raises(optim.ConfigError, match="warmup"):
        optim.learning_rate_schedule(_config(schedule="onecycle", warmup_epochs=1.0), 10, 100)


# -------------------------------------------------------------- ReduceLROnPlateau


def _plateau_lrs(values, **kw):
    config = _config(optimizer="adam", learning_rate=1e-3, schedule="plateau", **kw)
    tx = optim.create_optimizer(config, optax.constant_schedule(1e-3))
    state = tx.init(jnp.zeros(2))
    lrs = []
    for v in values:
        state = optim.update_plateau(state, v, config)
        lrs.append(optim.learning_rate_at(optax.constant_schedule(1e-3), state, 0))
    return np.array(lrs)


def test_plateau_lowers_after_patience_flat_evaluations():
    # torch: the rate drops on the (patience + 1)-th evaluation without improvement, then
    # the count restarts.
    lrs = _plateau_lrs([1.0] * 8, plateau_factor=0.5, plateau_patience=2)
    np.testing.assert_allclose(lrs, [1e-3] * 3 + [5e-4] * 3 + [2.5e-4] * 2, rtol=1e-6)


def test_plateau_threshold_min_lr_and_mode():
    # Relative threshold 1e-4: 0.99995 is not an improvement on 1.0, 0.9 is.
    lrs = _plateau_lrs([1.0, 0.99995, 0.9, 0.9], plateau_factor=0.5, plateau_patience=0)
    np.testing.assert_allclose(lrs, [1e-3, 5e-4, 5e-4, 2.5e-4], rtol=1e-6)
    # The floor: never below plateau_min_lr.
    lrs = _plateau_lrs([1.0] * 6, plateau_factor=0.1, plateau_patience=0, plateau_min_lr=2e-5)
    np.testing.assert_allclose(lrs, [1e-3, 1e-4, 2e-5, 2e-5, 2e-5, 2e-5], rtol=1e-5)
    # mode "max" on accuracy: rising accuracy is an improvement, falling is not.
    rising = _plateau_lrs([0.1, 0.2, 0.3], plateau_metric="val_accuracy", plateau_patience=0)
    np.testing.assert_allclose(rising, [1e-3] * 3)
    falling = _plateau_lrs(
        [0.3, 0.2, 0.1], plateau_metric="val_accuracy", plateau_patience=0, plateau_factor=0.5
    )
    np.testing.assert_allclose(falling, [1e-3, 5e-4, 2.5e-4], rtol=1e-6)


def test_plateau_scale_multiplies_the_update():
    config = _config(optimizer="sgd", momentum=0.0, learning_rate=0.1, schedule="plateau")
    config.plateau_patience, config.plateau_factor = 0, 0.5
    tx = optim.create_optimizer(config, optax.constant_schedule(0.1))
    p, g = jnp.array([1.0]), jnp.array([2.0])
    state = tx.init(p)
    state = optim.update_plateau(state, 1.0, config)
    state = optim.update_plateau(state, 1.0, config)  # flat: lr 0.1 -> 0.05
    updates, _ = tx.update(g, state, p)
    np.testing.assert_allclose(updates, [-0.05 * 2.0], rtol=1e-6)


def _train_lrs(workdir):
    records = [json.loads(x) for x in (workdir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["learning_rate"] for r in records if r.get("split") == "train"}


def test_plateau_state_survives_checkpoint_and_resume(tmp_path):
    # Patience 0 and a 50% relative threshold: every evaluation after the first counts as
    # flat, so the rate halves at the end of epochs 2, 3, 4, ... (6 steps per epoch).
    # Every random augmentation is on too: the resumed run must still end bitwise equal.
    recipe = dict(
        val_examples=64, schedule="plateau", plateau_patience=0, plateau_factor=0.5,
        plateau_threshold=0.5, log_every_steps=6, autoaugment="cifar10", random_rotation=10.0,
        color_jitter_brightness=0.2, random_erasing_prob=0.5, cutout_size=8,
        mixup_alpha=0.4, cutmix_alpha=1.0,
    )  # fmt: skip
    straight = train.train_and_evaluate(tiny_config(num_epochs=4, **recipe), str(tmp_path / "a"))

    first = train.train_and_evaluate(tiny_config(num_epochs=2, **recipe), str(tmp_path / "b"))
    assert first["steps"] == 12
    # A real resume from the step-12 checkpoint, whose plateau scale is already 0.5.
    resumed = train.train_and_evaluate(tiny_config(num_epochs=4, **recipe), str(tmp_path / "b"))
    assert resumed["resumed_from_step"] == 12 and resumed["steps"] == 24
    lrs = _train_lrs(tmp_path / "b")  # the logged rate is that of the step just taken
    assert lrs[6] == pytest.approx(1e-3) and lrs[12] == pytest.approx(1e-3)
    # A scale reset by the resume would log 1e-3 here (and the first evaluation after
    # it, an "improvement" on +inf, would not lower it).
    assert lrs[18] == pytest.approx(5e-4)
    assert lrs[24] == pytest.approx(2.5e-4)
    assert _train_lrs(tmp_path / "a") == lrs
    assert resumed["state_sha256"] == straight["state_sha256"]
    assert resumed["test_loss"] == straight["test_loss"]
