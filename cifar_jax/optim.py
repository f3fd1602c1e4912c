"""Optimizers and learning-rate schedules, built from the config with Optax.

Semantics follow PyTorch, which the seed reports used: ``weight_decay`` is coupled L2
(added to the gradient) for SGD and Adam, decoupled and scaled by the learning rate for
AdamW, and applied to every parameter.
"""

from __future__ import annotations

import optax

from cifar_jax.errors import ConfigError

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("constant", "cosine")


def learning_rate_schedule(config, steps_per_epoch: int, total_steps: int) -> optax.Schedule:
    """Peak ``learning_rate`` after ``warmup_epochs`` of linear warmup, then the schedule."""
    if config.learning_rate <= 0:
        raise ConfigError(
            f"learning_rate={config.learning_rate} must be > 0 (e.g. 0.1 for SGD, 1e-3 for Adam)."
        )
    if config.schedule not in SCHEDULES:
        raise ConfigError(f"schedule={config.schedule!r} is not known; use one of {SCHEDULES}.")
    peak = float(config.learning_rate)
    warmup_steps = int(round(config.warmup_epochs * steps_per_epoch))
    if warmup_steps >= total_steps and config.warmup_epochs > 0:
        raise ConfigError(
            f"warmup_epochs={config.warmup_epochs} covers the whole run ({total_steps} steps); "
            "use fewer warmup epochs."
        )
    if config.schedule == "constant":
        main = optax.constant_schedule(peak)
    else:
        main = optax.cosine_decay_schedule(
            peak, decay_steps=max(1, total_steps - warmup_steps), alpha=config.final_lr_fraction
        )
    if warmup_steps == 0:
        return main
    warmup = optax.linear_schedule(0.0, peak, warmup_steps)
    return optax.join_schedules([warmup, main], [warmup_steps])


def create_optimizer(config, schedule: optax.Schedule) -> optax.GradientTransformation:
    """The optimizer named by ``config.optimizer`` with clipping and weight decay."""
    if config.optimizer not in OPTIMIZERS:
        raise ConfigError(f"optimizer={config.optimizer!r} is not known; use one of {OPTIMIZERS}.")
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
        return optax.chain(*parts)
    if config.weight_decay > 0:
        parts.append(optax.add_decayed_weights(config.weight_decay))
    if config.optimizer == "sgd":
        parts.append(
            optax.sgd(schedule, momentum=config.momentum or None, nesterov=config.nesterov)
        )
    else:
        parts.append(
            optax.adam(schedule, b1=config.adam_b1, b2=config.adam_b2, eps=config.adam_eps)
        )
    return optax.chain(*parts)
