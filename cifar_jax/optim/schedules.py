"""Learning-rate schedules, built from the config with Optax (PyTorch semantics).

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
  ``base_momentum`` at the peak and back up, with the same cosine phases
  (:func:`onecycle_momentum_schedule`, which the factory injects per step);
* ``plateau``: torch ``ReduceLROnPlateau``: the (warmup +) constant peak here, times a
  scale kept in the optimizer state (:mod:`cifar_jax.optim.plateau`).

``schedule_step="epoch"`` (torch's ``scheduler.step()`` once per epoch) holds the rate
constant within each epoch (:func:`stepped_per_epoch`): a cosine epoch takes the value
the per-step schedule has at the epoch's first step (torch ``CosineAnnealingLR(T_max=
num_epochs)`` at the epoch index), a warmup epoch the value at its end (``peak * (e + 1)
/ warmup_epochs``, torch's ``LambdaLR`` warmup, so no epoch trains at rate 0). OneCycleLR
steps per batch in torch, so ``onecycle`` rejects it.
"""

from __future__ import annotations

import jax.numpy as jnp
import optax

from cifar_jax.errors import ConfigError

SCHEDULES = ("constant", "cosine", "linear", "step", "onecycle", "plateau")
SCHEDULE_STEPS = ("step", "epoch")


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
