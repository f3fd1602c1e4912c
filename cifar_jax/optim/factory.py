"""Optimizers and learning-rate schedules, built from the config with Optax.

Semantics follow PyTorch, which the seed reports used: ``weight_decay`` is coupled L2
(added to the gradient) for SGD, Adam and RMSprop, decoupled and scaled by the learning
rate for AdamW, and applied to every parameter.

Schedules are functions of the optimizer step (``count``, 0 for the first update):

* ``constant``, ``cosine`` or ``linear`` (to ``final_lr_fraction * peak``), after an
  optional linear warmup of ``warmup_epochs`` from ``warmup_start_fraction * peak``;
* ``step``: torch ``StepLR`` stepped once per epoch: ``peak * gamma ** (epoch //
  lr_step_epochs)`` with ``epoch = count // steps_per_epoch`` (counted from the start of
  the run, warmup included);
* ``onecycle``: torch ``OneCycleLR(anneal_strategy="cos", three_phase=False)`` stepped per
  batch over the run's steps: cosine from ``peak / div_factor`` up to ``peak`` over the
  first ``pct_start`` of the run, then cosine down to ``peak / div_factor /
  final_div_factor``. With ``onecycle_cycle_momentum`` (torch's ``cycle_momentum=True``,
  the default) the momentum cycles the other way, from ``max_momentum`` down to
  ``base_momentum`` at the peak and back up, with the same cosine phases: SGD's and
  RMSprop's momentum, Adam's and AdamW's ``b1``, replacing the configured value as torch
  does (:func:`onecycle_momentum_schedule`, injected per step with
  ``optax.inject_hyperparams``);
* ``plateau``: torch ``ReduceLROnPlateau`` (``threshold_mode`` "rel" or "abs",
  ``cooldown``, ``min_lr``, ``eps=1e-8``). The learning rate is the (warmup +) constant
  peak times a scale kept in the optimizer state (:class:`PlateauState`, checkpointed
  with it), which :func:`update_plateau` lowers after each validation evaluation. The
  scale multiplies the optimizer's final update, which for every optimizer here is
  exactly scaling its learning rate.

``schedule_step="epoch"`` (torch's ``scheduler.step()`` once per epoch) holds the rate
constant within each epoch (:func:`stepped_per_epoch`): a cosine epoch takes the value
the per-step schedule has at the epoch's first step (torch ``CosineAnnealingLR(T_max=
num_epochs)`` at the epoch index), a warmup epoch the value at its end (``peak * (e + 1)
/ warmup_epochs``, torch's ``LambdaLR`` warmup, so no epoch trains at rate 0). OneCycleLR
steps per batch in torch, so ``onecycle`` rejects it.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import inspect
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from cifar_jax.errors import ConfigError

OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop")
SCHEDULES = ("constant", "cosine", "linear", "step", "onecycle", "plateau")
PLATEAU_METRICS = ("val_loss", "val_accuracy")
PLATEAU_THRESHOLD_MODES = ("rel", "abs")
SCHEDULE_STEPS = ("step", "epoch")


# ----------------------------------------------------------------------- schedules


def step_decay_schedule(
    peak: float, steps_per_epoch: int, step_epochs: float, gamma: float
) -> optax.Schedule:
    """torch ``StepLR(step_size=step_epochs, gamma)`` stepped at the end of every epoch."""

    def schedule(count):
        epoch = jnp.asarray(count) // steps_per_epoch
        return peak * jnp.power(gamma, jnp.floor(epoch / step_epochs))

    return schedule


def _cos_anneal(start, end, pct):
    """torch OneCycleLR's ``_annealing_cos``: cosine from ``start`` (pct 0) to ``end`` (1)."""
    return end + (start - end) / 2.0 * (jnp.cos(jnp.pi * pct) + 1.0)


def _one_cycle(
    start: float, middle: float, end: float, total_steps: int, pct_start: float
) -> optax.Schedule:
    """torch OneCycleLR's two cosine phases over ``total_steps`` batches: ``start`` to
    ``middle`` until step ``pct_start * total_steps - 1``, then to ``end`` at step
    ``total_steps - 1``."""
    end_up = float(pct_start * total_steps) - 1.0
    end_down = float(total_steps - 1)

    def schedule(count):
        count = jnp.asarray(count, jnp.float32)
        up = _cos_anneal(start, middle, count / max(end_up, 1e-12))
        down_pct = (count - end_up) / max(end_down - end_up, 1e-12)
        down = _cos_anneal(middle, end, jnp.clip(down_pct, 0.0, 1.0))
        return jnp.where(count <= end_up, up, down)

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
    return _one_cycle(initial, peak, initial / final_div_factor, total_steps, pct_start)


def onecycle_momentum_schedule(
    total_steps: int,
    pct_start: float = 0.3,
    base_momentum: float = 0.85,
    max_momentum: float = 0.95,
) -> optax.Schedule:
    """torch ``OneCycleLR(cycle_momentum=True)``'s momentum: ``max_momentum`` at step 0,
    ``base_momentum`` at the learning-rate peak, ``max_momentum`` again at the last step,
    with the same cosine phases as :func:`onecycle_schedule` (inverse to the rate)."""
    return _one_cycle(max_momentum, base_momentum, max_momentum, total_steps, pct_start)


def stepped_per_epoch(
    schedule: optax.Schedule, steps_per_epoch: int, warmup_epochs: int = 0
) -> optax.Schedule:
    """``schedule`` stepped once per epoch (torch's ``scheduler.step()`` per epoch).

    The rate is constant within epoch ``e``: ``schedule`` at the epoch's first step
    (``e * steps_per_epoch``), except in the ``warmup_epochs`` warmup epochs, which take
    the value at their end (``(e + 1) * steps_per_epoch``), so a warmup from 0 reaches
    the peak in its last epoch and no epoch trains at rate 0.
    """

    def per_epoch(count):
        epoch = jnp.asarray(count) // steps_per_epoch
        first = jnp.where(epoch < warmup_epochs, epoch + 1, epoch) * steps_per_epoch
        return schedule(first)

    return per_epoch


def learning_rate_schedule(config, steps_per_epoch: int, total_steps: int) -> optax.Schedule:
    """Peak ``learning_rate`` after ``warmup_epochs`` of linear warmup, then the schedule,
    changing every step or, with ``schedule_step="epoch"``, every epoch.

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
    if config.schedule_step not in SCHEDULE_STEPS:
        raise ConfigError(
            f"schedule_step={config.schedule_step!r} is not known; use one of "
            f"{list(SCHEDULE_STEPS)} (e.g. --config.schedule_step=step)."
        )
    per_epoch = config.schedule_step == "epoch"
    if config.schedule == "onecycle":
        if warmup_steps:
            raise ConfigError(
                f"warmup_epochs={config.warmup_epochs} with schedule='onecycle': the "
                "one-cycle schedule has its own warmup; set --config.warmup_epochs=0."
            )
        if per_epoch:
            raise ConfigError(
                "schedule_step='epoch' with schedule='onecycle': torch's OneCycleLR steps "
                "once per batch; set --config.schedule_step=step."
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
    elif config.schedule == "linear":
        main = optax.linear_schedule(
            peak, peak * config.final_lr_fraction, max(1, total_steps - warmup_steps)
        )
    else:
        main = optax.cosine_decay_schedule(
            peak, decay_steps=max(1, total_steps - warmup_steps), alpha=config.final_lr_fraction
        )
    if per_epoch and config.warmup_epochs != int(config.warmup_epochs):
        raise ConfigError(
            f"warmup_epochs={config.warmup_epochs} with schedule_step='epoch': an "
            "epoch-stepped warmup needs a whole number of epochs (e.g. "
            f"--config.warmup_epochs={max(1, round(config.warmup_epochs))})."
        )
    if warmup_steps == 0:
        per_step = main
    else:
        start = float(config.get("warmup_start_fraction", 0.0))
        if not 0 <= start < 1:
            raise ConfigError(
                f"warmup_start_fraction={start} must be in [0, 1) (0 = warm up from 0)."
            )
        warmup = optax.linear_schedule(start * peak, peak, warmup_steps)
        per_step = optax.join_schedules([warmup, main], [warmup_steps])
    if per_epoch:
        return stepped_per_epoch(per_step, steps_per_epoch, int(config.warmup_epochs))
    return per_step


# ------------------------------------------------------------------ ReduceLROnPlateau


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


# ----------------------------------------------------------------------- optimizers


def rmsprop(
    schedule: optax.Schedule,
    alpha: float = 0.99,
    eps: float = 1e-8,
    momentum: float | jnp.ndarray | None = None,
) -> optax.GradientTransformation:
    """torch ``RMSprop(centered=False)``: ``v = alpha v + (1 - alpha) g^2`` from ``v = 0``,
    step ``g / (sqrt(v) + eps)`` (eps outside the square root, unlike optax's default),
    then, unless ``momentum`` is None, momentum ``buf = momentum buf + step``; ``p -= lr *
    buf``."""
    parts = [optax.scale_by_rms(decay=alpha, eps=eps, initial_scale=0.0, eps_in_sqrt=False)]
    if momentum is not None:
        parts.append(optax.trace(decay=momentum))
    parts.append(optax.scale_by_learning_rate(schedule))
    return optax.chain(*parts)


def with_scheduled(factory, name: str, schedule: optax.Schedule, /, **kwargs):
    """``factory(**kwargs)`` with its argument ``name`` set to ``schedule(count)`` at every
    update: ``optax.inject_hyperparams`` with every other argument static, so only that
    one changes (its current value is in the state's ``hyperparams[name]``)."""
    static = [arg for arg in inspect.signature(factory).parameters if arg != name]
    return optax.inject_hyperparams(factory, static_args=static)(**kwargs, **{name: schedule})


def cycled_momentum(config, total_steps: int | None) -> optax.Schedule | None:
    """The per-step momentum (SGD, RMSprop) or ``b1`` (Adam, AdamW) of
    ``schedule="onecycle"`` with ``onecycle_cycle_momentum``; None if it does not cycle."""
    if config.schedule != "onecycle" or not config.onecycle_cycle_momentum:
        return None
    if total_steps is None:
        raise ValueError(
            "create_optimizer needs total_steps for schedule='onecycle' with "
            "onecycle_cycle_momentum: the momentum cycles over the run's steps."
        )
    for name in ("onecycle_base_momentum", "onecycle_max_momentum"):
        if not 0 <= config[name] < 1:
            raise ConfigError(
                f"{name}={config[name]} must be in [0, 1) (e.g. --config.{name}=0.9)."
            )
    return onecycle_momentum_schedule(
        total_steps,
        config.onecycle_pct_start,
        config.onecycle_base_momentum,
        config.onecycle_max_momentum,
    )


# --------------------------------------------------------------- parameter groups


GROUP_OPTIMIZERS = OPTIMIZERS + ("muon",)


@dataclasses.dataclass(frozen=True)
class ParamGroup:
    """Parameters whose '/'-joined path (e.g. ``group1/norm1/bias``) matches one of the
    ``match`` globs, trained with their own learning-rate and weight-decay factors (torch's
    optimizer param groups) and, for ``trainable_epochs`` >= 0, only for that many epochs
    (0 = frozen from the start, as ``requires_grad=False``).

    ``optimizer`` ("" = the config's; or "muon", :func:`muon`) and ``momentum`` (-1 = the
    config's; SGD's, RMSprop's and Muon's momentum, Adam's ``b1``) let one group train
    differently, as airbench94_muon trains its conv filters with Muon and the rest with
    SGD. ``compress_schedule`` runs the whole learning-rate schedule within the group's
    ``trainable_epochs`` (airbench94_muon's whitening bias: ``lr * (1 - step / 75)``)."""

    name: str
    match: tuple[str, ...]
    lr_scale: float = 1.0
    weight_decay_scale: float = 1.0
    trainable_epochs: float = -1.0
    optimizer: str = ""
    momentum: float = -1.0
    compress_schedule: bool = False


_GROUP_FIELDS = {f.name for f in dataclasses.fields(ParamGroup)} - {"name"}


def param_groups(config) -> tuple[ParamGroup, ...]:
    """The config's ``param_groups``, checked (the parameters they match are checked by
    :func:`param_labels`)."""
    groups = []
    for name, spec in (config.get("param_groups") or {}).items():
        spec = dict(spec)
        unknown = sorted(set(spec) - _GROUP_FIELDS)
        if unknown or "match" not in spec:
            raise ConfigError(
                f"param_groups.{name} has fields {sorted(spec)}; a group needs 'match' "
                "(comma-separated globs over parameter paths) and may set "
                f"{', '.join(sorted(_GROUP_FIELDS - {'match'}))}. Fix: e.g. "
                f"--config.param_groups.{name}.match='*/norm*/bias'."
            )
        if name == "default":
            raise ConfigError("param_groups.default: 'default' names the ungrouped parameters.")
        group = ParamGroup(
            name=name,
            match=tuple(m.strip() for m in str(spec["match"]).split(",") if m.strip()),
            lr_scale=float(spec.get("lr_scale", 1.0)),
            weight_decay_scale=float(spec.get("weight_decay_scale", 1.0)),
            trainable_epochs=float(spec.get("trainable_epochs", -1.0)),
            optimizer=str(spec.get("optimizer", "")),
            momentum=float(spec.get("momentum", -1.0)),
            compress_schedule=bool(spec.get("compress_schedule", False)),
        )
        if not group.match or group.lr_scale <= 0 or group.weight_decay_scale < 0:
            raise ConfigError(
                f"param_groups.{name}: needs a non-empty match, lr_scale > 0 and "
                f"weight_decay_scale >= 0 (got {spec})."
            )
        if group.trainable_epochs < 0 and group.trainable_epochs != -1:
            raise ConfigError(
                f"param_groups.{name}.trainable_epochs={group.trainable_epochs}: use -1 (the "
                "whole run), 0 (frozen) or a number of epochs."
            )
        if group.optimizer not in ("",) + GROUP_OPTIMIZERS:
            raise ConfigError(
                f"param_groups.{name}.optimizer={group.optimizer!r} is not known; use one of "
                f"{list(GROUP_OPTIMIZERS)}, or leave it out for config.optimizer."
            )
        if group.momentum != -1 and not 0 <= group.momentum < 1:
            raise ConfigError(
                f"param_groups.{name}.momentum={group.momentum}: use -1 (config's) or a "
                "value in [0, 1) (e.g. 0.6)."
            )
        if group.compress_schedule and group.trainable_epochs <= 0:
            raise ConfigError(
                f"param_groups.{name}.compress_schedule runs the schedule within the "
                "group's trainable_epochs; set trainable_epochs > 0 (e.g. 3)."
            )
        groups.append(group)
    return tuple(groups)


def param_path(path) -> str:
    """The '/'-joined path of a parameter (``jax.tree_util`` key path)."""
    return "/".join(str(getattr(k, "key", getattr(k, "name", k))) for k in path)


def param_labels(groups: tuple[ParamGroup, ...], params: Any) -> Any:
    """A tree like ``params`` holding each leaf's group name ("default" for none).

    Raises ConfigError for a parameter matched by two groups or a group matching none,
    naming the parameters, so a typo cannot silently leave a group empty."""
    used = {g.name: 0 for g in groups}

    def label(path, _leaf) -> str:
        name = param_path(path)
        hits = [g.name for g in groups if any(fnmatch.fnmatchcase(name, m) for m in g.match)]
        if len(hits) > 1:
            raise ConfigError(
                f"parameter {name} is matched by param_groups {hits}; make their match "
                "globs disjoint."
            )
        if hits:
            used[hits[0]] += 1
        return hits[0] if hits else "default"

    labels = jax.tree_util.tree_map_with_path(label, params)
    empty = [name for name, count in used.items() if not count]
    if empty:
        names = [param_path(p) for p, _ in jax.tree_util.tree_leaves_with_path(params)]
        raise ConfigError(
            f"param_groups {empty} match no parameter. The parameters are: "
            f"{', '.join(names)}. Fix the group's match globs."
        )
    return labels


class _StopAfterState(NamedTuple):
    count: jnp.ndarray


def stop_after(steps: int) -> optax.GradientTransformation:
    """Zero updates from step ``steps`` on (a parameter trained only for a while; torch
    ``requires_grad=False`` from then: no gradient, no momentum, no weight decay)."""

    def init(params):
        del params
        return _StopAfterState(jnp.zeros((), jnp.int32))

    def update(updates, state, params=None):
        del params
        keep = state.count < steps
        updates = jax.tree.map(lambda u: jnp.where(keep, u, jnp.zeros_like(u)), updates)
        return updates, _StopAfterState(optax.safe_increment(state.count))

    return optax.GradientTransformation(init, update)


# ---------------------------------------------------------------------------- Muon

# The quintic Newton-Schulz coefficients of Muon (Keller Jordan), chosen to maximize the
# slope at zero rather than to converge (see airbench94_muon.py).
NEWTON_SCHULZ_COEFFS = (3.4445, -4.7750, 2.0315)


def newton_schulz(g: jax.Array, steps: int, eps: float = 1e-7) -> jax.Array:
    """airbench94_muon's ``zeropower_via_newtonschulz5``: the 2-D ``g`` with its singular
    values pushed towards 1 (roughly ``U V^T`` of its SVD) by ``steps`` quintic
    iterations, after scaling ``g`` to Frobenius norm <= 1. airbench runs it in bfloat16
    on its GPU; here it runs in ``g``'s dtype."""
    a, b, c = NEWTON_SCHULZ_COEFFS
    x = g / (jnp.linalg.norm(g) + eps)
    tall = x.shape[0] > x.shape[1]
    if tall:
        x = x.T
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x.T if tall else x


def orthogonalize(ns_steps: int) -> optax.GradientTransformation:
    """Each update, as the matrix ``(fan_out, fan_in)`` (a conv kernel HWIO flattened as
    torch's ``g.reshape(len(g), -1)`` of OIHW, up to a column order the iteration does
    not depend on), through :func:`newton_schulz`."""

    def one(u: jax.Array) -> jax.Array:
        if u.ndim < 2:
            raise ConfigError(
                f"a Muon param group holds a parameter of shape {u.shape}: Muon updates "
                "matrices and conv kernels only. Fix the group's match (e.g. '*/conv*/kernel')."
            )
        matrix = u.reshape(-1, u.shape[-1]).T.astype(jnp.float32)
        return newton_schulz(matrix, ns_steps).T.reshape(u.shape).astype(u.dtype)

    def update(updates, state, params=None):
        del params
        return jax.tree.map(one, updates), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def renormalize_weights() -> optax.GradientTransformation:
    """airbench94_muon's ``p *= sqrt(len(p)) / p.norm()`` before each step, as an update
    (added last in the chain): each weight rescaled to Frobenius norm sqrt(fan_out)."""

    def update(updates, state, params=None):
        if params is None:
            raise ValueError("renormalize_weights needs the params in update()")

        def one(u, p):
            p = p.astype(jnp.float32)
            scale = jnp.sqrt(float(p.shape[-1])) / jnp.linalg.norm(p)
            return (u + p * (scale - 1.0)).astype(u.dtype)

        return jax.tree.map(one, updates, params), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def muon(
    schedule: optax.Schedule,
    momentum: float,
    *,
    nesterov: bool = True,
    ns_steps: int = 5,
    weight_decay: float = 0.0,
    renormalize: bool = False,
) -> list[optax.GradientTransformation]:
    """Muon as airbench94_muon.py writes it, as the parts of a chain: momentum ``buf =
    momentum * buf + g`` (Nesterov: ``g + momentum * buf``), the update orthogonalized
    (:func:`orthogonalize`), ``p -= lr * update``; with ``renormalize`` each weight is first
    rescaled to norm sqrt(fan_out) (:func:`renormalize_weights`). ``weight_decay`` is
    coupled L2 as for SGD (airbench uses none on its Muon filters)."""
    if ns_steps < 1:
        raise ConfigError(f"muon_ns_steps={ns_steps} must be >= 1 (e.g. 5; airbench uses 3).")
    parts = [optax.add_decayed_weights(weight_decay)] if weight_decay > 0 else []
    parts += [
        optax.trace(decay=momentum, nesterov=nesterov),
        orthogonalize(ns_steps),
        optax.scale_by_learning_rate(schedule),
    ]
    if renormalize:
        parts.append(renormalize_weights())
    return parts


# ---------------------------------------------------------------------- optimizers


def create_optimizer(
    config,
    schedule: optax.Schedule,
    total_steps: int | None = None,
    steps_per_epoch: int | None = None,
) -> optax.GradientTransformation:
    """The optimizer named by ``config.optimizer`` with clipping, weight decay, the
    ``param_groups`` and, for ``schedule="plateau"``, the plateau scale.

    ``total_steps`` (the run's length) is needed only by ``schedule="onecycle"`` with
    ``onecycle_cycle_momentum``, whose momentum (or Adam's ``b1``) then follows
    :func:`onecycle_momentum_schedule` instead of the configured constant, as torch's
    ``OneCycleLR(cycle_momentum=True)`` overwrites it. ``steps_per_epoch`` is needed by
    param groups trained for a number of epochs.
    """
    if config.optimizer not in OPTIMIZERS:
        raise ConfigError(
            f"optimizer={config.optimizer!r} is not known; use one of {list(OPTIMIZERS)} "
            "(e.g. --config.optimizer=sgd)."
        )
    if config.weight_decay < 0:
        raise ConfigError(f"weight_decay={config.weight_decay} must be >= 0.")
    if config.grad_clip_norm < 0:
        raise ConfigError(f"grad_clip_norm={config.grad_clip_norm} must be >= 0 (0 = off).")
    cycled = cycled_momentum(config, total_steps)
    groups = param_groups(config)

    parts = []
    if config.grad_clip_norm > 0:
        parts.append(optax.clip_by_global_norm(config.grad_clip_norm))
    if not groups:  # flat, so the optimizer state keeps its layout (checkpoints)
        parts.extend(_optimizer(config, schedule, config.weight_decay, cycled))
    else:
        transforms = {
            "default": optax.chain(*_optimizer(config, schedule, config.weight_decay, cycled))
        }
        for g in groups:
            if g.trainable_epochs == 0:
                transforms[g.name] = optax.set_to_zero()
                continue

            transforms[g.name] = optax.chain(
                *_group_optimizer(config, g, schedule, cycled, total_steps, steps_per_epoch)
            )
        parts.append(optax.multi_transform(transforms, lambda p: param_labels(groups, p)))
    if config.schedule == "plateau":
        parts.append(scale_by_plateau(plateau_mode(config.plateau_metric)))
    return optax.chain(*parts)


def _group_optimizer(
    config,
    group: ParamGroup,
    schedule: optax.Schedule,
    cycled: optax.Schedule | None,
    total_steps: int | None,
    steps_per_epoch: int | None,
) -> list[optax.GradientTransformation]:
    """The chain of one param group (see :class:`ParamGroup`)."""
    group_steps = 0
    if group.trainable_epochs > 0:
        if not steps_per_epoch:
            raise ValueError("create_optimizer needs steps_per_epoch for trainable_epochs")
        group_steps = max(1, round(group.trainable_epochs * steps_per_epoch))
    if group.compress_schedule and not total_steps:
        raise ValueError("create_optimizer needs total_steps for compress_schedule")
    speedup = total_steps / group_steps if group.compress_schedule else 1.0

    def scaled(count):
        return group.lr_scale * schedule(jnp.asarray(count) * speedup)

    if cycled is not None and group.momentum != -1:
        raise ConfigError(
            f"param_groups.{group.name}.momentum with schedule='onecycle' and "
            "onecycle_cycle_momentum: the cycled momentum replaces it. Drop one of them."
        )
    weight_decay = config.weight_decay * group.weight_decay_scale
    optimizer = group.optimizer or config.optimizer
    momentum = None if group.momentum == -1 else group.momentum
    if optimizer == "muon":
        chain = muon(
            scaled,
            config.momentum if momentum is None else momentum,
            nesterov=config.nesterov,
            ns_steps=int(config.muon_ns_steps),
            weight_decay=weight_decay,
            renormalize=bool(config.muon_renormalize),
        )
    else:
        chain = _optimizer(config, scaled, weight_decay, cycled, optimizer, momentum)
    if group_steps:
        chain.append(stop_after(group_steps))
    return chain


def _optimizer(
    config,
    schedule: optax.Schedule,
    weight_decay: float,
    cycled: optax.Schedule | None,
    optimizer: str | None = None,
    momentum: float | None = None,
) -> list[optax.GradientTransformation]:
    """``optimizer`` (default ``config.optimizer``) at ``schedule`` with ``weight_decay``
    (coupled L2, or AdamW's decoupled decay), as the parts of a chain; ``momentum``
    replaces the config's momentum (SGD, RMSprop) or ``adam_b1``."""
    optimizer = optimizer or config.optimizer

    def build(factory, momentum_name: str, configured, zero_is_none=False, **kwargs):
        """``factory`` with its momentum argument constant (None for a zero momentum of
        SGD or RMSprop: no momentum state), or cycled (onecycle)."""
        if cycled is None:
            value = configured if momentum is None else momentum
            if zero_is_none and not value:
                value = None
            return factory(**kwargs, **{momentum_name: value})
        return with_scheduled(factory, momentum_name, cycled, **kwargs)

    if optimizer == "adamw":
        return [
            build(
                optax.adamw,
                "b1",
                config.adam_b1,
                learning_rate=schedule,
                b2=config.adam_b2,
                eps=config.adam_eps,
                weight_decay=weight_decay,
            )
        ]
    parts = []
    if weight_decay > 0:
        parts.append(optax.add_decayed_weights(weight_decay))
    if optimizer == "sgd":
        parts.append(
            build(
                optax.sgd,
                "momentum",
                config.momentum,
                zero_is_none=True,
                learning_rate=schedule,
                nesterov=config.nesterov,
            )
        )
    elif optimizer == "rmsprop":
        parts.append(
            build(
                rmsprop,
                "momentum",
                config.rmsprop_momentum,
                zero_is_none=True,
                schedule=schedule,
                alpha=config.rmsprop_alpha,
                eps=config.rmsprop_eps,
            )
        )
    else:
        parts.append(
            build(
                optax.adam,
                "b1",
                config.adam_b1,
                learning_rate=schedule,
                b2=config.adam_b2,
                eps=config.adam_eps,
            )
        )
    return parts


__all__ = [
    "OPTIMIZERS",
    "ParamGroup",
    "PLATEAU_THRESHOLD_MODES",
    "SCHEDULES",
    "SCHEDULE_STEPS",
    "PlateauState",
    "create_optimizer",
    "cycled_momentum",
    "learning_rate_at",
    "learning_rate_schedule",
    "onecycle_momentum_schedule",
    "onecycle_schedule",
    "param_groups",
    "param_labels",
    "plateau_state",
    "reduce_on_plateau",
    "rmsprop",
    "scale_by_plateau",
    "step_decay_schedule",
    "stop_after",
    "stepped_per_epoch",
    "update_plateau",
    "with_scheduled",
]
