"""The optimizer of a config (:func:`create_optimizer`), built with Optax: gradient
clipping, SGD, Adam, AdamW or RMSprop (or, per param group, another one or Muon), weight
decay and, for ``schedule="plateau"``, the plateau scale.

Semantics follow PyTorch, which the seed reports used: ``weight_decay`` is coupled L2
(added to the gradient) for SGD, Adam and RMSprop, decoupled and scaled by the learning
rate for AdamW, and applied to every parameter. With ``schedule="onecycle"`` and
``onecycle_cycle_momentum`` SGD's and RMSprop's momentum, Adam's and AdamW's ``b1``
follow the cycled momentum (:func:`cycled_momentum`), replacing the configured value as
torch does, injected per step with ``optax.inject_hyperparams`` (:func:`with_scheduled`).
"""

from __future__ import annotations

import inspect

import jax.numpy as jnp
import optax

from cifar_jax.errors import ConfigError
from cifar_jax.optim.groups import (
    OPTIMIZERS,
    ParamGroup,
    param_groups,
    param_labels,
    stop_after,
)
from cifar_jax.optim.muon import muon
from cifar_jax.optim.plateau import plateau_mode, scale_by_plateau
from cifar_jax.optim.schedules import onecycle_momentum_schedule


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
