"""Parameter groups (torch's optimizer param groups): the parameters whose path matches a
group's globs train with its own learning-rate and weight-decay factors, optimizer
(``GROUP_OPTIMIZERS``: the config's ``OPTIMIZERS`` or Muon) and momentum, for all or
part of the run (:func:`stop_after`).
"""

from __future__ import annotations

import dataclasses
import fnmatch
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from cifar_jax.errors import ConfigError

# The config's optimizers (built by factory.create_optimizer); here, below the factory,
# since a param group may name one of them or Muon.
OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop")
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
