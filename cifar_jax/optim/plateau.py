"""ReduceLROnPlateau (``schedule="plateau"``) as torch's: ``threshold_mode`` "rel" or
"abs", ``cooldown``, ``min_lr``, ``eps=1e-8``.

The learning rate is the (warmup +) constant peak times a scale kept in the optimizer
state (:class:`PlateauState`, checkpointed with it), which :func:`update_plateau` lowers
after each validation evaluation. The scale multiplies the optimizer's final update
(:func:`scale_by_plateau`, last in the chain), which for every optimizer here is exactly
scaling its learning rate.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from cifar_jax.errors import ConfigError

PLATEAU_METRICS = ("val_loss", "val_accuracy")
PLATEAU_THRESHOLD_MODES = ("rel", "abs")


class PlateauState(NamedTuple):
    """The state of ReduceLROnPlateau, kept in the optimizer state (so it is checkpointed).

    torch's two counters share ``num_bad_epochs``: torch holds its bad-epoch count at 0
    throughout a cooldown, so at most one of them is ever non-zero, and a cooldown is
    stored as its negative. Checkpoints written before cooldown existed (never negative)
    load as they are.
    """

    scale: jnp.ndarray  # float32: the learning rate is the schedule's value times this
    best: jnp.ndarray  # float32: best metric so far (+inf for "min", -inf for "max")
    num_bad_epochs: jnp.ndarray  # int32: evaluations since the last improvement, or
    # during a cooldown minus the cooldown evaluations left

    @property
    def bad_epochs(self) -> jnp.ndarray:
        """torch's ``num_bad_epochs``."""
        return jnp.maximum(self.num_bad_epochs, 0)

    @property
    def cooldown_counter(self) -> jnp.ndarray:
        """torch's ``cooldown_counter``: evaluations of cooldown left."""
        return jnp.maximum(-self.num_bad_epochs, 0)


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
    threshold_mode: str = "rel",
    cooldown: int = 0,
) -> PlateauState:
    """One ``ReduceLROnPlateau.step(value)`` (torch semantics).

    An improvement is, for ``threshold_mode="rel"``, ``value < best * (1 - threshold)``
    ("min") or ``value > best * (1 + threshold)`` ("max"); for ``"abs"``, ``value < best
    - threshold`` or ``value > best + threshold``. During a cooldown (the ``cooldown``
    evaluations after a reduction) evaluations without one are not counted. After more
    than ``patience`` counted evaluations without one, the scale becomes ``max(scale *
    factor, min_scale)`` (if that lowers it by more than ``eps_scale``), the count
    restarts and the cooldown starts (even when the reduction was too small to apply, as
    in torch). Scales are relative to the peak learning rate.
    """
    if threshold_mode not in PLATEAU_THRESHOLD_MODES:
        raise ValueError(f"threshold_mode={threshold_mode!r}: use 'rel' or 'abs'")
    value = jnp.asarray(value, jnp.float32)
    if threshold_mode == "rel":
        bar = state.best * (1.0 - threshold) if mode == "min" else state.best * (1.0 + threshold)
    else:
        bar = state.best - threshold if mode == "min" else state.best + threshold
    better = value < bar if mode == "min" else value > bar
    best = jnp.where(better, value, state.best)
    bad = jnp.where(better, 0, state.bad_epochs + 1)
    in_cooldown = state.cooldown_counter > 0
    cooldown_left = jnp.where(in_cooldown, state.cooldown_counter - 1, 0)
    bad = jnp.where(in_cooldown, 0, bad)  # torch ignores bad epochs in cooldown
    reduce = bad > patience
    lowered = jnp.maximum(state.scale * factor, min_scale)
    scale = jnp.where(reduce & (state.scale - lowered > eps_scale), lowered, state.scale)
    bad = jnp.where(reduce, 0, bad)
    cooldown_left = jnp.where(reduce, cooldown, cooldown_left)
    counter = jnp.where(cooldown_left > 0, -cooldown_left, bad)  # see PlateauState
    return PlateauState(scale.astype(jnp.float32), best, counter.astype(jnp.int32))


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
    if config.plateau_threshold_mode not in PLATEAU_THRESHOLD_MODES:
        raise ConfigError(
            f"plateau_threshold_mode={config.plateau_threshold_mode!r} is not known; use one "
            f"of {list(PLATEAU_THRESHOLD_MODES)} (e.g. --config.plateau_threshold_mode=rel)."
        )
    kwargs = dict(
        mode=plateau_mode(config.plateau_metric),
        factor=float(config.plateau_factor),
        patience=int(config.plateau_patience),
        threshold=float(config.plateau_threshold),
        min_scale=float(config.plateau_min_lr) / peak,
        eps_scale=1e-8 / peak,  # torch's eps, on the learning rate
        threshold_mode=config.plateau_threshold_mode,
        cooldown=int(config.plateau_cooldown),
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
