"""Learning-rate schedules with PyTorch semantics: StepLR, OneCycleLR (with momentum
cycling), ReduceLROnPlateau (threshold modes, cooldown, min_lr, eps), epoch-stepped
schedules (values by hand, and against torch where it is installed), and the plateau
state surviving a checkpoint / resume."""

import json
import math
import shutil

import jax.numpy as jnp
import numpy as np
import optax
import pytest
from test_train import tiny_config

from cifar_jax import config as config_lib
from cifar_jax import optim, train, validation
from cifar_jax.errors import ConfigError


def _config(**kw):
    config = config_lib.base_config()
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


def _onecycle_torch_formula(step, total, pct_start, start, middle, end):
    """torch OneCycleLR's get_lr (two phases, cosine) for one value, in float64."""
    end_up, end_down = pct_start * total - 1, total - 1

    def cos(a, b, pct):
        return b + (a - b) / 2 * (math.cos(math.pi * pct) + 1)

    if step <= end_up:
        return cos(start, middle, step / end_up)
    return cos(middle, end, (step - end_up) / (end_down - end_up))


def test_onecycle_momentum_goes_inversely_to_the_rate():
    total = 100
    momentum = optim.onecycle_momentum_schedule(total, 0.3, 0.85, 0.95)
    # torch: max_momentum at step 0, base_momentum at the rate's peak (step 29), back to
    # max_momentum at the last step, cosine in between.
    assert float(momentum(0)) == pytest.approx(0.95, rel=1e-7)
    assert float(momentum(29)) == pytest.approx(0.85, rel=1e-7)
    assert float(momentum(99)) == pytest.approx(0.95, rel=1e-7)
    for step in (1, 10, 28, 30, 50, 80, 98):
        want = _onecycle_torch_formula(step, total, 0.3, 0.95, 0.85, 0.95)
        assert float(momentum(step)) == pytest.approx(want, rel=1e-6), step


def _onecycle_run(grads, **kw):
    """Parameters after each update of the config's optimizer with schedule="onecycle"."""
    config = _config(schedule="onecycle", weight_decay=0.0, **kw)
    total = len(grads)
    tx = optim.create_optimizer(
        config, optim.learning_rate_schedule(config, 10, total), total_steps=total
    )
    p = jnp.array([1.0, -2.0, 0.5])
    state, out = tx.init(p), []
    for g in grads:
        updates, state = tx.update(jnp.asarray(g), state, p)
        p = optax.apply_updates(p, updates)
        out.append(np.asarray(p))
    return np.array(out)


def _grads(total=20):
    return np.random.default_rng(0).normal(size=(total, 3)).astype(np.float32)


def test_onecycle_cycles_sgd_momentum_by_hand():
    # torch SGD with OneCycleLR(cycle_momentum=True): buf = m_k buf + g_k (buf = g_0 at
    # the first step), p -= lr_k buf, m_k and lr_k the one-cycle values of step k. The
    # configured momentum (0 here) is replaced, as torch overwrites it.
    grads, total, peak = _grads(), 20, 0.1
    got = _onecycle_run(grads, optimizer="sgd", learning_rate=peak, momentum=0.0)
    p, buf = np.array([1.0, -2.0, 0.5]), np.zeros(3)
    for k, g in enumerate(grads.astype(np.float64)):
        lr = _onecycle_torch_formula(k, total, 0.3, peak / 25, peak, peak / 25 / 1e4)
        m = _onecycle_torch_formula(k, total, 0.3, 0.95, 0.85, 0.95)
        buf = g if k == 0 else m * buf + g
        p = p - lr * buf
        np.testing.assert_allclose(got[k], p, rtol=1e-5, atol=1e-6)
    # Not cycling: the constant configured momentum, exactly the plain optimizer.
    flat = _onecycle_run(grads, optimizer="sgd", learning_rate=peak, onecycle_cycle_momentum=False)
    p, buf = np.array([1.0, -2.0, 0.5]), np.zeros(3)
    for k, g in enumerate(grads.astype(np.float64)):
        lr = _onecycle_torch_formula(k, total, 0.3, peak / 25, peak, peak / 25 / 1e4)
        buf = 0.9 * buf + g
        p = p - lr * buf
    np.testing.assert_allclose(flat[-1], p, rtol=1e-5, atol=1e-6)
    assert not np.allclose(flat[-1], got[-1])


def test_onecycle_cycles_adam_b1_by_hand():
    # torch Adam with cycled beta1: m = b1_k m + (1 - b1_k) g, bias correction 1 - b1_k^t
    # with the current b1_k.
    grads, total, peak = _grads(), 20, 1e-2
    got = _onecycle_run(grads, optimizer="adam", learning_rate=peak)
    p, m, v = np.array([1.0, -2.0, 0.5]), np.zeros(3), np.zeros(3)
    for k, g in enumerate(grads.astype(np.float64)):
        lr = _onecycle_torch_formula(k, total, 0.3, peak / 25, peak, peak / 25 / 1e4)
        b1 = _onecycle_torch_formula(k, total, 0.3, 0.95, 0.85, 0.95)
        m = b1 * m + (1 - b1) * g
        v = 0.999 * v + 0.001 * g * g
        t = k + 1
        p = p - lr * (m / (1 - b1**t)) / (np.sqrt(v / (1 - 0.999**t)) + 1e-8)
        np.testing.assert_allclose(got[k], p, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "optimizer,extra",
    [("sgd", {}), ("sgd", {"nesterov": True}), ("adam", {}), ("adamw", {}), ("rmsprop", {})],
)
def test_onecycle_momentum_matches_torch(optimizer, extra):
    torch = pytest.importorskip("torch")
    grads, total = _grads(), 20
    peak = 0.1 if optimizer == "sgd" else 1e-2
    kw = dict(optimizer=optimizer, learning_rate=peak, **extra)
    got = _onecycle_run(grads, **kw)
    param = torch.nn.Parameter(torch.tensor([1.0, -2.0, 0.5]))
    make = {
        "sgd": lambda: torch.optim.SGD([param], lr=peak, momentum=0.9, **extra),
        "adam": lambda: torch.optim.Adam([param], lr=peak),
        "adamw": lambda: torch.optim.AdamW([param], lr=peak, weight_decay=0.0),
        "rmsprop": lambda: torch.optim.RMSprop([param], lr=peak),
    }
    opt = make[optimizer]()
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=peak, total_steps=total, cycle_momentum=True, base_momentum=0.85,
        max_momentum=0.95, three_phase=False, anneal_strategy="cos",
    )  # fmt: skip
    momentum = optim.onecycle_momentum_schedule(total)
    for k, g in enumerate(grads):
        group = opt.param_groups[0]
        used = group["betas"][0] if "betas" in group else group["momentum"]
        assert float(momentum(k)) == pytest.approx(used, rel=1e-6), k
        param.grad = torch.tensor(g)
        opt.step()
        sched.step()
        np.testing.assert_allclose(got[k], param.detach().numpy(), rtol=1e-5, atol=1e-6)


def test_onecycle_with_cycled_momentum_trains_and_resumes_exactly(tmp_path):
    # The cycled momentum's step count lives in the checkpointed optimizer state: a run
    # resumed from its epoch-1 checkpoint must end bitwise equal to the uninterrupted one.
    config = tiny_config(schedule="onecycle", optimizer="sgd", learning_rate=0.05)
    first = train.train_and_evaluate(config, str(tmp_path))
    assert first["steps"] == 16  # 8 steps per epoch, a checkpoint after each epoch
    shutil.rmtree(tmp_path / "checkpoints" / "16")
    (tmp_path / "results.json").unlink()
    resumed = train.train_and_evaluate(config, str(tmp_path))
    assert resumed["resumed_from_step"] == 8
    assert resumed["state_sha256"] == first["state_sha256"]


def test_onecycle_momentum_needs_the_run_length_and_checks_its_range():
    config = _config(schedule="onecycle")
    with pytest.raises(ValueError, match="total_steps"):
        optim.create_optimizer(config, optax.constant_schedule(0.1))
    config.onecycle_cycle_momentum = False  # nothing cycles: no run length needed
    optim.create_optimizer(config, optax.constant_schedule(0.1))
    for name in ("onecycle_base_momentum", "onecycle_max_momentum"):
        config = _config(schedule="onecycle", **{name: 1.0})
        with pytest.raises(ConfigError, match=name):
            validation.validate_config(config)


# ------------------------------------------------------------- epoch-stepped schedules


def test_epoch_stepped_cosine_is_cosine_annealing_lr_per_epoch():
    # torch CosineAnnealingLR(T_max=10, eta_min=0.01 * peak) stepped once per epoch:
    # eta_min + (peak - eta_min) (1 + cos(pi e / 10)) / 2 for every step of epoch e.
    peak, eta_min = 0.1, 0.001
    config = _config(learning_rate=peak, final_lr_fraction=0.01, schedule_step="epoch")
    schedule = optim.learning_rate_schedule(config, 10, 100)
    per_step = optim.learning_rate_schedule(
        _config(learning_rate=peak, final_lr_fraction=0.01), 10, 100
    )
    for epoch in range(10):
        want = eta_min + (peak - eta_min) * (1 + math.cos(math.pi * epoch / 10)) / 2
        values = [float(schedule(epoch * 10 + k)) for k in range(10)]
        assert values == [values[0]] * 10, epoch  # constant within the epoch
        assert values[0] == pytest.approx(want, rel=1e-5), epoch
        assert values[0] == float(per_step(epoch * 10))  # the epoch's first step
    assert float(per_step(5)) != float(per_step(0))  # the default changes every step


def test_epoch_stepped_warmup_then_cosine():
    # Warmup epochs take their end value (torch LambdaLR (e + 1) / warmup_epochs): 0.05,
    # 0.1; then CosineAnnealingLR(T_max=8) from epoch 2.
    config = _config(learning_rate=0.1, warmup_epochs=2, schedule_step="epoch")
    schedule = optim.learning_rate_schedule(config, 10, 100)
    assert [float(schedule(s)) for s in (0, 9, 10, 19)] == pytest.approx([0.05] * 2 + [0.1] * 2)
    for epoch in range(2, 10):
        want = 0.1 * (1 + math.cos(math.pi * (epoch - 2) / 8)) / 2
        assert float(schedule(epoch * 10)) == pytest.approx(want, rel=1e-5, abs=1e-9)
        assert float(schedule(epoch * 10 + 9)) == float(schedule(epoch * 10))
    # StepLR is per epoch already: epoch stepping changes nothing after the warmup.
    step = dict(schedule="step", learning_rate=0.1, lr_step_epochs=3, lr_step_gamma=0.1)
    a = optim.learning_rate_schedule(_config(**step), 10, 100)
    b = optim.learning_rate_schedule(_config(schedule_step="epoch", **step), 10, 100)
    assert [float(a(s)) for s in range(100)] == [float(b(s)) for s in range(100)]


def test_epoch_stepped_cosine_matches_torch():
    torch = pytest.importorskip("torch")
    peak, epochs = 0.1, 12
    config = _config(learning_rate=peak, final_lr_fraction=0.05, schedule_step="epoch")
    schedule = optim.learning_rate_schedule(config, 7, 7 * epochs)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=peak)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs, eta_min=0.05 * peak)
    for epoch in range(epochs):
        want = opt.param_groups[0]["lr"]
        for k in range(7):
            assert float(schedule(epoch * 7 + k)) == pytest.approx(want, rel=1e-5), epoch
        opt.step()
        sched.step()


@pytest.mark.parametrize(
    "kw,match",
    [
        (dict(schedule="onecycle"), "OneCycleLR steps"),
        (dict(warmup_epochs=0.5), "whole number of epochs"),
        (dict(schedule_step="batch"), "schedule_step"),
    ],
)
def test_epoch_stepping_errors(kw, match):
    config = _config(**{"schedule_step": "epoch", **kw})
    with pytest.raises(ConfigError, match=match):
        optim.learning_rate_schedule(config, 10, 100)
    with pytest.raises(ConfigError, match=match):
        validation.validate_config(config)


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


def test_plateau_cooldown_by_hand():
    # torch: after a reduction, `cooldown` evaluations are not counted as bad. Flat metric,
    # patience 0, factor 0.5: without cooldown the rate halves at every evaluation after
    # the first; with cooldown 2 at evaluations 2, 5, 8 (two ignored after each).
    flat = [1.0] * 8
    lrs = _plateau_lrs(flat, plateau_factor=0.5, plateau_patience=0, plateau_cooldown=2)
    want = [1e-3, 5e-4, 5e-4, 5e-4, 2.5e-4, 2.5e-4, 2.5e-4, 1.25e-4]
    np.testing.assert_allclose(lrs, want, rtol=1e-6)
    lrs = _plateau_lrs(flat, plateau_factor=0.5, plateau_patience=0)
    np.testing.assert_allclose(lrs, [1e-3 * 0.5**k for k in range(8)], rtol=1e-6)
    # Patience 1, cooldown 1: the cooldown evaluation is ignored, then two bad ones lower.
    lrs = _plateau_lrs(flat, plateau_factor=0.5, plateau_patience=1, plateau_cooldown=1)
    np.testing.assert_allclose(lrs, [1e-3] * 2 + [5e-4] * 3 + [2.5e-4] * 3, rtol=1e-6)


def test_plateau_cooldown_counter_shares_the_bad_epoch_field():
    # Checkpoints hold PlateauState's three fields; cooldown added none, so checkpoints
    # written before it still restore.
    assert optim.PlateauState._fields == ("scale", "best", "num_bad_epochs")
    state = optim.PlateauState(jnp.float32(1.0), jnp.float32(1.0), jnp.int32(0))
    kw = dict(mode="min", factor=0.5, patience=0, threshold=1e-4, min_scale=0.0, eps_scale=1e-5)
    state = optim.reduce_on_plateau(state, 1.0, cooldown=3, **kw)  # bad: lowers, cools down
    assert (int(state.cooldown_counter), int(state.bad_epochs)) == (3, 0)
    state = optim.reduce_on_plateau(state, 1.0, cooldown=3, **kw)
    assert (int(state.cooldown_counter), int(state.bad_epochs)) == (2, 0)
    assert float(state.scale) == 0.5


def test_plateau_threshold_mode_abs_and_rel_differ():
    # Threshold 0.1, patience 0, factor 0.5. From best 10, 9.5 improves by 0.5 (> 0.1
    # absolute) but only 5% (< 10% relative); from best 0.5, 0.44 improves by 12%
    # relative but 0.06 (< 0.1) absolute.
    kw = dict(plateau_factor=0.5, plateau_patience=0, plateau_threshold=0.1)
    rel = _plateau_lrs([10.0, 9.5], **kw)
    absolute = _plateau_lrs([10.0, 9.5], plateau_threshold_mode="abs", **kw)
    np.testing.assert_allclose(rel, [1e-3, 5e-4], rtol=1e-6)
    np.testing.assert_allclose(absolute, [1e-3, 1e-3], rtol=1e-6)
    rel = _plateau_lrs([0.5, 0.44], **kw)
    absolute = _plateau_lrs([0.5, 0.44], plateau_threshold_mode="abs", **kw)
    np.testing.assert_allclose(rel, [1e-3, 1e-3], rtol=1e-6)
    np.testing.assert_allclose(absolute, [1e-3, 5e-4], rtol=1e-6)
    # Mode "max": 0.56 after 0.5 is 12% better, but 0.06 < 0.1 absolute.
    acc = dict(plateau_metric="val_accuracy", **kw)
    np.testing.assert_allclose(_plateau_lrs([0.5, 0.56], **acc), [1e-3, 1e-3], rtol=1e-6)
    np.testing.assert_allclose(
        _plateau_lrs([0.5, 0.56], plateau_threshold_mode="abs", **acc), [1e-3, 5e-4], rtol=1e-6
    )
    with pytest.raises(ConfigError, match="plateau_threshold_mode"):
        validation.validate_config(_config(plateau_threshold_mode="relative"))


def test_plateau_min_lr_and_eps():
    # torch: new_lr = max(lr * factor, min_lr), skipped if it lowers lr by <= eps = 1e-8.
    kw = dict(plateau_factor=0.5, plateau_patience=0)
    lrs = _plateau_lrs([1.0, 1.0], plateau_min_lr=1e-3 - 5e-9, **kw)  # 5e-9 < eps: kept
    np.testing.assert_allclose(lrs, [1e-3, 1e-3], rtol=1e-9)
    lrs = _plateau_lrs([1.0, 1.0], plateau_min_lr=1e-3 - 5e-8, **kw)  # 5e-8 > eps: lowered
    np.testing.assert_allclose(lrs, [1e-3, 1e-3 - 5e-8], rtol=1e-7)
    lrs = _plateau_lrs([1.0] * 4, plateau_min_lr=3e-4, **kw)
    np.testing.assert_allclose(lrs, [1e-3, 5e-4, 3e-4, 3e-4], rtol=1e-6)


@pytest.mark.parametrize(
    "kw",
    [
        dict(plateau_patience=2),
        dict(plateau_patience=1, plateau_cooldown=2),
        dict(plateau_patience=0, plateau_cooldown=3, plateau_min_lr=2e-5),
        dict(plateau_patience=1, plateau_threshold_mode="abs", plateau_threshold=0.015),
        dict(plateau_patience=0, plateau_cooldown=1, plateau_threshold_mode="abs",
             plateau_threshold=0.015, plateau_metric="val_accuracy"),
        dict(plateau_patience=1, plateau_threshold=0.01, plateau_metric="val_accuracy"),
    ],
)  # fmt: skip
def test_plateau_matches_torch(kw):
    torch = pytest.importorskip("torch")
    steps = np.random.default_rng(1).choice([-0.02, 0.0, 0.0, 0.01, 0.03], 60)
    values = np.round(1.0 + np.cumsum(steps), 2).astype(np.float32)
    config = _config(**{"plateau_factor": 0.5, "plateau_metric": "val_loss", **kw})
    lrs = _plateau_lrs(values, **{"plateau_factor": 0.5, **kw})
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
        opt,
        mode="min" if config.plateau_metric == "val_loss" else "max",
        factor=0.5,
        patience=config.plateau_patience,
        threshold=config.plateau_threshold,
        threshold_mode=config.plateau_threshold_mode,
        cooldown=config.plateau_cooldown,
        min_lr=config.plateau_min_lr,
    )
    want = []
    for v in values:
        sched.step(float(v))
        want.append(opt.param_groups[0]["lr"])
    assert len(set(want)) > 2  # the sequence does lower the rate, more than once
    np.testing.assert_allclose(lrs, want, rtol=1e-5)


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


@pytest.mark.parametrize("cooldown", [0, 1])
def test_plateau_state_survives_checkpoint_and_resume(tmp_path, cooldown):
    # Patience 0 and a 50% relative threshold: every evaluation after the first counts as
    # flat, so the rate halves at the end of epochs 2, 3, 4, ... (6 steps per epoch);
    # with cooldown 1, the evaluation after each reduction is ignored (epoch 3).
    # Every random augmentation is on too: the resumed run must still end bitwise equal.
    recipe = dict(
        val_examples=64, schedule="plateau", plateau_patience=0, plateau_factor=0.5,
        plateau_threshold=0.5, plateau_cooldown=cooldown, log_every_steps=6,
        autoaugment="cifar10", random_rotation=10.0, color_jitter_brightness=0.2,
        color_jitter_hue=0.1, random_erasing_prob=0.5, cutout_size=8, mixup_alpha=0.4,
        cutmix_alpha=1.0,
    )  # fmt: skip
    straight = train.train_and_evaluate(tiny_config(num_epochs=4, **recipe), str(tmp_path / "a"))

    first = train.train_and_evaluate(tiny_config(num_epochs=2, **recipe), str(tmp_path / "b"))
    assert first["steps"] == 12
    # A real resume from the step-12 checkpoint, whose plateau scale is already 0.5 (and,
    # with cooldown, whose cooldown has one evaluation left).
    resumed = train.train_and_evaluate(tiny_config(num_epochs=4, **recipe), str(tmp_path / "b"))
    assert resumed["resumed_from_step"] == 12 and resumed["steps"] == 24
    lrs = _train_lrs(tmp_path / "b")  # the logged rate is that of the step just taken
    assert lrs[6] == pytest.approx(1e-3) and lrs[12] == pytest.approx(1e-3)
    # A scale reset by the resume would log 1e-3 here (and the first evaluation after
    # it, an "improvement" on +inf, would not lower it).
    assert lrs[18] == pytest.approx(5e-4)
    # A cooldown lost by the resume would lower the rate at the step-18 evaluation.
    assert lrs[24] == pytest.approx(5e-4 if cooldown else 2.5e-4)
    assert _train_lrs(tmp_path / "a") == lrs
    assert resumed["state_sha256"] == straight["state_sha256"]
    assert resumed["test_loss"] == straight["test_loss"]
