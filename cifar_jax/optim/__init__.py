"""Optimizers and learning-rate schedules, built from the config with Optax, with PyTorch
semantics. One module per concern, each re-exported here (``optim.X`` names them all):

* :mod:`~cifar_jax.optim.schedules`: learning-rate schedules (``SCHEDULES``,
  ``SCHEDULE_STEPS``, :func:`learning_rate_schedule`, one-cycle, step decay, per epoch);
* :mod:`~cifar_jax.optim.plateau`: ReduceLROnPlateau (``PLATEAU_METRICS``,
  ``PLATEAU_THRESHOLD_MODES``, :class:`PlateauState`, :func:`update_plateau`,
  :func:`learning_rate_at`);
* :mod:`~cifar_jax.optim.groups`: parameter groups (``OPTIMIZERS``, ``GROUP_OPTIMIZERS``,
  :class:`ParamGroup`, :func:`param_groups`, :func:`param_labels`, :func:`stop_after`);
* :mod:`~cifar_jax.optim.muon`: Muon (:func:`newton_schulz`, :func:`muon`);
* :mod:`~cifar_jax.optim.factory`: :func:`create_optimizer` and the optimizers it chains
  (:func:`rmsprop`, :func:`with_scheduled`, :func:`cycled_momentum`).

The factory imports the other four; they import none of the others. ``optim.muon`` is the
function (as before the split): import the module's names as ``from
cifar_jax.optim.muon import ...``.
"""

from cifar_jax.errors import ConfigError as ConfigError  # optim.ConfigError, as before
from cifar_jax.optim.factory import (
    create_optimizer,
    cycled_momentum,
    rmsprop,
    with_scheduled,
)
from cifar_jax.optim.groups import (
    GROUP_OPTIMIZERS,
    OPTIMIZERS,
    ParamGroup,
    param_groups,
    param_labels,
    param_path,
    stop_after,
)
from cifar_jax.optim.muon import (
    NEWTON_SCHULZ_COEFFS,
    muon,
    newton_schulz,
    orthogonalize,
    renormalize_weights,
)
from cifar_jax.optim.plateau import (
    PLATEAU_METRICS,
    PLATEAU_THRESHOLD_MODES,
    PlateauState,
    learning_rate_at,
    plateau_mode,
    plateau_state,
    reduce_on_plateau,
    scale_by_plateau,
    update_plateau,
)
from cifar_jax.optim.schedules import (
    SCHEDULE_STEPS,
    SCHEDULES,
    learning_rate_schedule,
    onecycle_momentum_schedule,
    onecycle_schedule,
    step_decay_schedule,
    stepped_per_epoch,
)

__all__ = [
    "GROUP_OPTIMIZERS",
    "NEWTON_SCHULZ_COEFFS",
    "OPTIMIZERS",
    "PLATEAU_METRICS",
    "PLATEAU_THRESHOLD_MODES",
    "SCHEDULES",
    "SCHEDULE_STEPS",
    "ParamGroup",
    "PlateauState",
    "create_optimizer",
    "cycled_momentum",
    "learning_rate_at",
    "learning_rate_schedule",
    "muon",
    "newton_schulz",
    "onecycle_momentum_schedule",
    "onecycle_schedule",
    "orthogonalize",
    "param_groups",
    "param_labels",
    "param_path",
    "plateau_mode",
    "plateau_state",
    "reduce_on_plateau",
    "renormalize_weights",
    "rmsprop",
    "scale_by_plateau",
    "step_decay_schedule",
    "stepped_per_epoch",
    "stop_after",
    "update_plateau",
    "with_scheduled",
]
