"""What a run does with each validation result: the best result so far, early stopping,
and the ReduceLROnPlateau step.

All of it is state of the run, so it lives in the checkpointed train state and a resumed
run continues exactly where the interrupted one was:

* :class:`ValTracker` (``TrainState.val_tracker``): the best ``config.best_metric`` so
  far, its step, the validation loss and accuracy there, and the evaluations since.
* the plateau scale of the learning rate (:class:`cifar_jax.optim.PlateauState`, in the
  optimizer state).

Whenever the best metric improves (strictly; :func:`improved_at`) the trainer saves the
state under ``<workdir>/best`` (:class:`cifar_jax.checkpoint.BestCheckpoint`, one kept),
whether or not early stopping is on. Early stopping ends the run after
``early_stopping_patience`` evaluations in a row without an improvement, and the final
test then uses the best checkpoint (``test_checkpoint="auto"``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import flax
import jax
import jax.numpy as jnp

from cifar_jax import optim
from cifar_jax.errors import ConfigError

BEST_METRICS = ("val_accuracy", "val_loss")
# The state the final test evaluates ("auto": best with early stopping, else final).
TEST_CHECKPOINTS = ("auto", "final", "best")


@flax.struct.dataclass
class ValTracker:
    """The best validation result so far (all scalars; ``best_step`` -1 = none yet)."""

    best_score: jnp.ndarray  # float32: accuracy, or -loss, of the best evaluation
    best_step: jnp.ndarray  # int32
    best_accuracy: jnp.ndarray  # float32: validation accuracy at best_step
    best_loss: jnp.ndarray  # float32: validation loss at best_step
    bad_evals: jnp.ndarray  # int32: evaluations since best_step


def init_tracker() -> ValTracker:
    nan = jnp.asarray(jnp.nan, jnp.float32)
    return ValTracker(
        best_score=jnp.asarray(-jnp.inf, jnp.float32),
        best_step=jnp.asarray(-1, jnp.int32),
        best_accuracy=nan,
        best_loss=nan,
        bad_evals=jnp.zeros((), jnp.int32),
    )


def _score(metric: str, loss, accuracy) -> jnp.ndarray:
    """Higher is better: the accuracy, or minus the loss."""
    if metric not in BEST_METRICS:
        raise ConfigError(
            f"best_metric={metric!r} is not known; use one of {list(BEST_METRICS)} "
            "(e.g. --config.best_metric=val_accuracy)."
        )
    value = accuracy if metric == "val_accuracy" else -loss
    return jnp.asarray(value, jnp.float32)


def update_tracker(tracker: ValTracker, loss, accuracy, step, metric: str) -> ValTracker:
    """The tracker after one evaluation at ``step`` (jittable). An evaluation with a
    non-finite loss never improves (so a diverged state is never the best)."""
    score = _score(metric, loss, accuracy)
    better = (score > tracker.best_score) & jnp.isfinite(jnp.asarray(loss, jnp.float32))
    return ValTracker(
        best_score=jnp.where(better, score, tracker.best_score),
        best_step=jnp.where(better, jnp.asarray(step, jnp.int32), tracker.best_step),
        best_accuracy=jnp.where(better, jnp.float32(accuracy), tracker.best_accuracy),
        best_loss=jnp.where(better, jnp.float32(loss), tracker.best_loss),
        bad_evals=jnp.where(better, 0, tracker.bad_evals + 1).astype(jnp.int32),
    )


def make_validation_update(config, sharding) -> Callable[[Any, float, float, int], Any]:
    """``update(state, val_loss, val_accuracy, step) -> state``: the tracker and, for
    ``schedule="plateau"``, the learning-rate plateau, stepped on one evaluation.

    Jitted with the state donated; the inputs are the same on every process, so every
    process makes the same decision.
    """
    metric = config.best_metric
    _score(metric, 0.0, 0.0)  # checks the name now
    plateau_on_loss = config.plateau_metric == "val_loss"
    use_plateau = config.schedule == "plateau"

    def update(state, loss, accuracy, step):
        tracker = update_tracker(state.val_tracker, loss, accuracy, step, metric)
        opt_state = state.opt_state
        if use_plateau:
            opt_state = optim.update_plateau(
                opt_state, loss if plateau_on_loss else accuracy, config
            )
        return state.replace(val_tracker=tracker, opt_state=opt_state)

    return jax.jit(update, out_shardings=sharding, donate_argnums=(0,))


def improved_at(state, step: int) -> bool:
    """Whether the evaluation at ``step`` set a new best."""
    return int(state.val_tracker.best_step) == step


def should_stop(state, config) -> bool:
    """Early stopping: ``early_stopping_patience`` evaluations in a row without a new best."""
    patience = int(config.early_stopping_patience)
    return patience > 0 and int(state.val_tracker.bad_evals) >= patience


def test_checkpoint(config) -> str:
    """ "best" or "final": the state the final test evaluates."""
    choice = config.test_checkpoint
    if choice not in TEST_CHECKPOINTS:
        raise ConfigError(
            f"test_checkpoint={choice!r} is not known; use one of {list(TEST_CHECKPOINTS)} "
            "(e.g. --config.test_checkpoint=auto)."
        )
    if choice == "auto":
        return "best" if config.early_stopping_patience > 0 else "final"
    return choice


def check_schedule(config, steps_per_epoch: int, total_steps: int) -> None:
    """A run that tests its best-validation checkpoint must validate at least once:
    fail before training, not after it, when it would end before its first validation."""
    first_val = steps_per_epoch * config.eval_every_epochs
    if test_checkpoint(config) == "best" and total_steps < first_val:
        raise ConfigError(
            f"this run tests its best-validation checkpoint (test_checkpoint="
            f"{config.test_checkpoint!r}, early_stopping_patience="
            f"{config.early_stopping_patience}) but ends at step {total_steps}, before its "
            f"first validation at step {first_val} (every {config.eval_every_epochs} "
            f"epoch(s) of {steps_per_epoch} steps), so there would be no best checkpoint. "
            f"Fix: --config.test_checkpoint=final, or train for at least {first_val} steps."
        )


def results(state, config, tested: str) -> dict[str, Any]:
    """The validation fields of results.json."""
    tracker = jax.device_get(state.val_tracker)
    step = int(tracker.best_step)

    def value(x):
        x = float(x)
        return x if step >= 0 and math.isfinite(x) else None

    return {
        "best_metric": config.best_metric,
        "best_val_accuracy": value(tracker.best_accuracy),
        "best_val_loss": value(tracker.best_loss),
        "best_step": step if step >= 0 else None,
        "stopped_early": should_stop(state, config),
        "tested_checkpoint": tested,
    }


__all__ = [
    "BEST_METRICS",
    "TEST_CHECKPOINTS",
    "ValTracker",
    "check_schedule",
    "improved_at",
    "init_tracker",
    "make_validation_update",
    "results",
    "should_stop",
    "test_checkpoint",
    "update_tracker",
]
