"""Optimizers and learning-rate schedules, built from the config with Optax.

Semantics follow PyTorch, which the seed reports used: ``weight_decay`` is coupled L2
(added to the gradient) for SGD, Adam and RMSprop, decoupled and scaled by the learning
rate for AdamW, and applied to every parameter.

Schedules are functions of the optimizer step (``count``, 0 for the first update):

* ``constant``, ``cosine`` (to ``final_lr_fraction * peak``), after an optional linear
  warmup of ``warmup_epochs``;
* ``step``: torch ``StepLR`` stepped once per epoch: ``peak * gamma ** (epoch //
  lr_step_epochs)`` with ``epoch = count // steps_per_epoch`` (counted from the start of
  the run, warmup included);
* ``onecycle``: torch ``OneCycleLR(anneal_strategy="cos", three_phase=False)`` stepped per
  batch over the run's steps: cosine from ``peak / div_factor`` up to ``peak`` over the
  first ``pct_start`` of the run, then cosine down to ``peak / div_factor /
  final_div_factor``. Only the learning rate cycles (torch's ``cycle_momentum=False``);
* ``plateau``: torch ``ReduceLROnPlateau`` (``threshold_mode="rel"``, no cooldown). The
  learning rate is the (warmup +) constant peak times a scale kept in the optimizer state
  (:class:`PlateauState`, checkpointed with it), which :func:`update_plateau` lowers
  after each validation evaluation. The scale multiplies the optimizer's final update,
  which for every optimizer here is exactly scaling its learning rate.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from cifar_jax.errors import ConfigError

OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop")
SCHEDULES = ("constant", "cosine", "step", "onecycle", "plateau")
PLATEAU_METRICS = ("val_loss", "val_accuracy")


# ----------------------------------------------------------------------- schedules


def step_decay_schedule(
    peak: float, steps_per_epoch: int, step_epochs: float, gamma: float
) -> optax.Schedule:
    """torch ``StepLR(step_size=step_epochs, gamma)`` stepped at the end of every epoch."""

    def schedule(count):
        epoch = jnp.asarray(count) // steps_per_epoch
        return peak * jnp.power(gamma, jnp.floor(epoch / step_epochs))

    return schedule


def onecycle_schedule(
    peak: float,
    total_steps: int,
    pct_start: float = 0.3,
    div_factor: float = 25.0,
    final_div_factor: float = 1e4,
) -> optax.Schedule:
    """torch ``OneCycleLR`` (cosine, two phases) over ``total_steps`` batches.

    Phase 1 ends at step ``pct_start * total_steps - 1`` (at ``peak``), phase 2 at
    ``total_steps - 1`` (at ``peak / div_factor / final_div_factor``), as in torch.
    """
    initial = peak / div_factor
    final = initial / final_div_factor
    end_up = float(pct_start * total_steps) - 1.0
    end_down = float(total_steps - 1)

    def cos_anneal(start, end, pct):
        return end + (start - end) / 2.0 * (jnp.cos(jnp.pi * pct) + 1.0)

    def schedule(count):
        count = jnp.asarray(count, jnp.float32)
        up = cos_anneal(initial, peak, count / max(end_up, 1e-12))
        down_pct = (count - end_up) / max(end_down - end_up, 1e-12)
        down = cos_anneal(peak, final, jnp.clip(down_pct, 0.0, 1.0))
        return jnp.where(count <= end_up, up, down)

    return schedule


def learning_rate_schedule(config, steps_per_epoch: int, total_steps: int) -> optax.Schedule:
    """Peak ``learning_rate`` after ``warmup_epochs`` of linear warmup, then the schedule.

    For ``plateau`` this is the schedule before the plateau scale (see the module doc).
    """
    if config.learning_rate <= 0:
        raise ConfigError(
            f"learning_rate={config.learning_rate} must be > 0 (e.g. 0.1 for SGD, 1e-3 for Adam)."
        )
    if config.schedule not in SCHEDULES:
        raise ConfigError(
            f"schedule={config.schedule!r} is not known; use one of {list(SCHEDULES)} "
            "(e.g. --config.schedule=cosine)."
        )
    peak = float(config.learning_rate)
    warmup_steps = int(round(config.warmup_epochs * steps_per_epoch))
    if warmup_steps >= total_steps and config.warmup_epochs > 0:
        raise ConfigError(
            f"warmup_epochs={config.warmup_epochs} covers the whole run ({total_steps} steps); "
            "use fewer warmup epochs."
        )
    if config.schedule == "onecycle":
        if warmup_steps:
            raise ConfigError(
                f"warmup_epochs={config.warmup_epochs} with schedule='onecycle': the "
                "one-cycle schedule has its own warmup; set --config.warmup_epochs=0."
            )
        return onecycle_schedule(
            peak,
            total_steps,
            config.onecycle_pct_start,
            config.onecycle_div_factor,
            config.onecycle_final_div_factor,
        )
    if config.schedule in ("constant", "plateau"):
        main = optax.constant_schedule(peak)
    elif config.schedule == "step":
        if config.lr_step_epochs <= 0:
            raise ConfigError(
                f"lr_step_epochs={config.lr_step_epochs} must be > 0 (e.g. "
                "--config.lr_step_epochs=30)."
            )
        absolute = step_decay_schedule(
            peak, steps_per_epoch, config.lr_step_epochs, config.lr_step_gamma
        )

        # join_schedules restarts the count at the boundary; StepLR counts epochs from
        # the start of the run.
        def main(count):
            return absolute(count + warmup_steps)
    else:
        main = optax.cosine_decay_schedule(
            peak, decay_steps=max(1, total_steps - warmup_steps), alpha=config.final_lr_fraction
        )
    if warmup_steps == 0:
        return main
    warmup = optax.linear_schedule(0.0, peak, warmup_steps)
    return optax.join_schedules([warmup, main], [warmup_steps])


# ------------------------------------------------------------------ ReduceLROnPlateau


class PlateauState(NamedTuple):
    """The state of ReduceLROnPlateau, kept in the optimizer state (so it is checkpointed)."""

    scale: jnp.ndarray  # float32: the learning rate is the schedule's value times this
    best: jnp.ndarray  # float32: best metric so far (+inf for "min", -inf for "max")
    num_bad_epochs: jnp.ndarray  # int32: evaluations since the last improvement


def scale_by_plateau(mode: str) -> optax.GradientTransformation:
    """Multiplies the updates by the plateau scale (1 until :func:`update_plateau` lowers it)."""
    if mode not in ("min", "max"):
        raise ValueError(f"mode={mode!r}: use 'min' or 'max'")

    def init(params):
        del params
        worst = jnp.inf if mode == "min" else -jnp.inf
        return PlateauState(
            scale=jnp.ones((), jnp.float32),
            best=jnp.asarray(worst, jnp.float32),
            num_bad_epochs=jnp.zeros((), jnp.int32),
        )

    def update(updates, state, params=None):
        del params
        return jax.tree.map(lambda u: u * state.scale.astype(u.dtype), updates), state

    return optax.GradientTransformation(init, update)


def plateau_mode(metric: str) -> str:
    """ "min" for a loss, "max" for an accuracy."""
    if metric not in PLATEAU_METRICS:
        raise ConfigError(
            f"plateau_metric={metric!r} is not known; use one of {list(PLATEAU_METRICS)} "
            "(e.g. --config.plateau_metric=val_loss)."
        )
    return "min" if metric == "val_loss" else "max"


def reduce_on_plateau(
    state: PlateauState,
    value: jnp.ndarray,
    *,
    mode: str,
    factor: float,
    patience: int,
    threshold: float,
    min_scale: float,
    eps_scale: float,
) -> PlateauState:
    """One ``ReduceLROnPlateau.step(value)`` (torch semantics, ``threshold_mode="rel"``).

    An improvement is ``value < best * (1 - threshold)`` ("min") or ``value > best * (1 +
    threshold)`` ("max"). After more than ``patience`` evaluations without one, the scale
    becomes ``max(scale * factor, min_scale)`` (if that lowers it by more than
    ``eps_scale``) and the count restarts. Scales are relative to the peak learning rate.
    """
    value = jnp.asarray(value, jnp.float32)
    if mode == "min":
        better = value < state.best * (1.0 - threshold)
    else:
        better = value > state.best * (1.0 + threshold)
    best = jnp.where(better, value, state.best)
    bad = jnp.where(better, 0, state.num_bad_epochs + 1)
    reduce = bad > patience
    lowered = jnp.maximum(state.scale * factor, min_scale)
    scale = jnp.where(reduce & (state.scale - lowered > eps_scale), lowered, state.scale)
    bad = jnp.where(reduce, 0, bad)
    return PlateauState(scale.astype(jnp.float32), best, bad.astype(jnp.int32))


def _is_plateau(node: Any) -> bool:
    return isinstance(node, PlateauState)


def plateau_state(opt_state: Any) -> PlateauState | None:
    """The :class:`PlateauState` inside an optimizer state, or None if it has none."""
    found = [n for n in jax.tree.leaves(opt_state, is_leaf=_is_plateau) if _is_plateau(n)]
    return found[0] if found else None


def update_plateau(opt_state: Any, value: jnp.ndarray, config) -> Any:
    """``opt_state`` with its plateau state stepped on the validation ``value`` (jittable).

    Unchanged if the optimizer has no plateau state (``schedule != "plateau"``).
    """
    peak = float(config.learning_rate)
    kwargs = dict(
        mode=plateau_mode(config.plateau_metric),
        factor=float(config.plateau_factor),
        patience=int(config.plateau_patience),
        threshold=float(config.plateau_threshold),
        min_scale=float(config.plateau_min_lr) / peak,
        eps_scale=1e-8 / peak,  # torch's eps, on the learning rate
    )
    return jax.tree.map(
        lambda n: reduce_on_plateau(n, value, **kwargs) if _is_plateau(n) else n,
        opt_state,
        is_leaf=_is_plateau,
    )


def learning_rate_at(schedule: optax.Schedule, opt_state: Any, count: int) -> float:
    """The learning rate of update number ``count`` (0-based), plateau scale included."""
    lr = float(schedule(count))
    plateau = plateau_state(opt_state)
    if plateau is not None:
        lr *= float(plateau.scale)
    return lr


# ----------------------------------------------------------------------- optimizers


def rmsprop(
    schedule: optax.Schedule, alpha: float = 0.99, eps: float = 1e-8, momentum: float = 0.0
) -> optax.GradientTransformation:
    """torch ``RMSprop(centered=False)``: ``v = alpha v + (1 - alpha) g^2`` from ``v = 0``,
    step ``g / (sqrt(v) + eps)`` (eps outside the square root, unlike optax's default),
    then momentum ``buf = momentum buf + step`` and ``p -= lr * buf``."""
    parts = [optax.scale_by_rms(decay=alpha, eps=eps, initial_scale=0.0, eps_in_sqrt=False)]
    if momentum:
        parts.append(optax.trace(decay=momentum))
    parts.append(optax.scale_by_learning_rate(schedule))
    return optax.chain(*parts)


def create_optimizer(config, schedule: optax.Schedule) -> optax.GradientTransformation:
    """The optimizer named by ``config.optimizer`` with clipping, weight decay and, for
    ``schedule="plateau"``, the plateau scale."""
    if config.optimizer not in OPTIMIZERS:
        raise ConfigError(
            f"optimizer={config.optimizer!r} is not known; use one of {list(OPTIMIZERS)} "
            "(e.g. --config.optimizer=sgd)."
        )
    if config.weight_decay < 0:
        raise ConfigError(f"weight_decay={config.weight_decay} must be >= 0.")
    if config.grad_clip_norm < 0:
        raise ConfigError(f"grad_clip_norm={config.grad_clip_norm} must be >= 0 (0 = off).")
    parts = []
    if config.grad_clip_norm > 0:
        parts.append(optax.clip_by_global_norm(config.grad_clip_norm))
    if config.optimizer == "adamw":
        parts.append(
            optax.adamw(
                schedule,
                b1=config.adam_b1,
                b2=config.adam_b2,
                eps=config.adam_eps,
                weight_decay=config.weight_decay,
            )
        )
    else:
        if config.weight_decay > 0:
            parts.append(optax.add_decayed_weights(config.weight_decay))
        if config.optimizer == "sgd":
            parts.append(
                optax.sgd(schedule, momentum=config.momentum or None, nesterov=config.nesterov)
            )
        elif config.optimizer == "rmsprop":
            parts.append(
                rmsprop(
                    schedule,
                    alpha=config.rmsprop_alpha,
                    eps=config.rmsprop_eps,
                    momentum=config.rmsprop_momentum,
                )
            )
        else:
            parts.append(
                optax.adam(schedule, b1=config.adam_b1, b2=config.adam_b2, eps=config.adam_eps)
            )
    if config.schedule == "plateau":
        parts.append(scale_by_plateau(plateau_mode(config.plateau_metric)))
    return optax.chain(*parts)


__all__ = [
    "OPTIMIZERS",
    "SCHEDULES",
    "PlateauState",
    "create_optimizer",
    "learning_rate_at",
    "learning_rate_schedule",
    "onecycle_schedule",
    "plateau_state",
    "reduce_on_plateau",
    "rmsprop",
    "scale_by_plateau",
    "step_decay_schedule",
    "update_plateau",
]
