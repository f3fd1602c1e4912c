"""Training losses, built from the config.

``make_loss(config)`` gives a :class:`Loss`: a per-example data term of
``(logits, targets)``, where targets are integer labels (N,) or soft targets (N, C)
(mixup / cutmix), plus a penalty of the parameters added once per batch:

* ``loss="cross_entropy"``: ``-sum_c t_c log p_c``.
* ``loss="focal"`` (Lin et al. 2017, no alpha weighting): ``-sum_c t_c (1 - p_c)^gamma
  log p_c``, which is ``-(1 - p_y)^gamma log p_y`` for a one-hot target and plain
  cross-entropy at ``gamma = 0``.
* ``label_smoothing = e`` replaces the targets by ``(1 - e) t + e / C`` (torch's
  ``CrossEntropyLoss(label_smoothing=e)``), for either loss.
* ``l2_penalty = lam`` adds ``lam * sum(p ** 2)`` over every parameter (no 1/2), the
  "cross-entropy + L2" of report 001. It is separate from ``weight_decay``, which the
  optimizer applies (coupled for sgd/adam/rmsprop, decoupled for adamw).

Both data losses are linear in the targets, so a mixed target ``lam t_a + (1 - lam) t_b``
gives ``lam loss(t_a) + (1 - lam) loss(t_b)``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from cifar_jax.errors import ConfigError

LOSSES = ("cross_entropy", "focal")
LOSS_REDUCTIONS = ("mean", "sum")


def soft_targets(targets: jnp.ndarray, num_classes: int, label_smoothing: float) -> jnp.ndarray:
    """(N, C) float targets from integer labels or soft targets, label-smoothed."""
    if jnp.issubdtype(targets.dtype, jnp.integer):
        targets = jax.nn.one_hot(targets, num_classes)
    if label_smoothing:
        targets = optax.smooth_labels(targets, label_smoothing)
    return targets


def cross_entropy(
    logits: jnp.ndarray, targets: jnp.ndarray, label_smoothing: float = 0.0
) -> jnp.ndarray:
    """Per-example cross-entropy against integer labels or soft targets."""
    targets = soft_targets(targets, logits.shape[-1], label_smoothing)
    return optax.softmax_cross_entropy(logits, targets)


def focal_loss(
    logits: jnp.ndarray, targets: jnp.ndarray, gamma: float, label_smoothing: float = 0.0
) -> jnp.ndarray:
    """Per-example focal loss ``-sum_c t_c (1 - p_c)^gamma log p_c``."""
    targets = soft_targets(targets, logits.shape[-1], label_smoothing)
    log_p = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    weight = jnp.power(jnp.clip(1.0 - jnp.exp(log_p), 0.0, 1.0), gamma)
    return -jnp.sum(targets * weight * log_p, axis=-1)


def l2_penalty(params: Any, coefficient: float) -> jnp.ndarray:
    """``coefficient * sum(p ** 2)`` over every leaf of ``params``."""
    if not coefficient:
        return jnp.zeros((), jnp.float32)
    squares = [jnp.sum(jnp.square(p.astype(jnp.float32))) for p in jax.tree.leaves(params)]
    return coefficient * sum(squares)


@dataclasses.dataclass(frozen=True)
class Loss:
    """The training objective: ``mean(per_example(logits, targets)) + penalty(params)``
    (``sum`` instead of ``mean`` with ``reduction="sum"``, as airbench94)."""

    per_example: Callable[[jnp.ndarray, jnp.ndarray], jnp.ndarray]
    penalty: Callable[[Any], jnp.ndarray]
    reduction: str = "mean"

    def total(self, logits: jnp.ndarray, targets: jnp.ndarray, params: Any):
        """(objective, per-example data loss) for one batch."""
        per_example = self.per_example(logits, targets)
        data = per_example.sum() if self.reduction == "sum" else per_example.mean()
        return data + self.penalty(params), per_example


def _no_penalty(params: Any) -> jnp.ndarray:
    del params
    return jnp.zeros((), jnp.float32)


def cross_entropy_loss(label_smoothing: float = 0.0) -> Loss:
    """Plain (label-smoothed) cross-entropy without a penalty."""
    return Loss(lambda logits, t: cross_entropy(logits, t, label_smoothing), _no_penalty)


def make_loss(config) -> Loss:
    """The :class:`Loss` of ``config.loss``, ``focal_gamma``, ``label_smoothing`` and
    ``l2_penalty``."""
    name = config.loss
    smoothing = float(config.label_smoothing)
    gamma = float(config.focal_gamma)
    coefficient = float(config.l2_penalty)
    if name not in LOSSES:
        raise ConfigError(
            f"loss={name!r} is not known; use one of {list(LOSSES)} "
            "(e.g. --config.loss=cross_entropy)."
        )
    if not 0 <= smoothing < 1:
        raise ConfigError(f"label_smoothing={smoothing} must be in [0, 1).")
    if gamma < 0 or coefficient < 0:
        raise ConfigError(
            f"focal_gamma={gamma} and l2_penalty={coefficient} must be >= 0 "
            "(e.g. --config.focal_gamma=2 --config.l2_penalty=0)."
        )
    if name == "focal":

        def per_example(logits, targets):
            return focal_loss(logits, targets, gamma, smoothing)
    else:

        def per_example(logits, targets):
            return cross_entropy(logits, targets, smoothing)

    reduction = config.get("loss_reduction", "mean")
    if reduction not in LOSS_REDUCTIONS:
        raise ConfigError(
            f"loss_reduction={reduction!r} is not known; use one of {list(LOSS_REDUCTIONS)}."
        )
    return Loss(
        per_example=per_example,
        penalty=lambda params: l2_penalty(params, coefficient),
        reduction=reduction,
    )


__all__ = [
    "LOSSES",
    "LOSS_REDUCTIONS",
    "Loss",
    "cross_entropy",
    "cross_entropy_loss",
    "focal_loss",
    "l2_penalty",
    "make_loss",
]
