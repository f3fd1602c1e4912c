"""Orbax checkpoints of the train state and the data iterator.

Orbax writes each checkpoint into a temporary directory and renames it only once every
file is written (``commit_success.txt`` marks it complete), so a run killed mid-save
never leaves a half-written checkpoint that looks valid, and older checkpoints are only
deleted (``max_to_keep``) after a newer one is committed. If the newest checkpoint still
cannot be read (disk errors, a file truncated by hand), :func:`restore_latest` warns and
falls back to the previous one instead of losing the run.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import orbax.checkpoint as ocp
from absl import logging

from cifar_jax.errors import CheckpointError

LATEST = "checkpoints"  # periodic checkpoints, the newest `keep_checkpoints` kept
BEST = "best"  # the checkpoint with the best validation metric so far (one kept)


def checkpoint_dir(workdir: str, name: str = LATEST) -> str:
    return os.path.join(os.path.abspath(workdir), name)


def create_manager(
    workdir: str, keep: int, read_only: bool = False, name: str = LATEST
) -> ocp.CheckpointManager:
    """A manager for ``<workdir>/<name>`` keeping the newest ``keep`` checkpoints."""
    if keep < 1:
        raise CheckpointError(f"keep_checkpoints={keep} must be >= 1.")
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep, create=not read_only, read_only=read_only
    )
    return ocp.CheckpointManager(
        checkpoint_dir(workdir, name), options=options, item_names=("state", "data")
    )


def save(manager: ocp.CheckpointManager, step: int, state: Any, data_state: dict) -> None:
    """Starts saving ``state`` (a pytree) and the data iterator state at ``step``."""
    manager.save(
        step,
        args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data_state)
        ),
        force=True,
    )


def _abstract(target: Any) -> Any:
    """Shapes, dtypes and shardings of ``target``, to restore straight onto the devices."""
    return jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None)),
        target,
    )


def restore(manager: ocp.CheckpointManager, step: int, target: Any) -> tuple[Any, dict]:
    """Restores the checkpoint at ``step`` onto the structure and shardings of ``target``."""
    restored = manager.restore(
        step,
        args=ocp.args.Composite(
            state=ocp.args.StandardRestore(_abstract(target)), data=ocp.args.JsonRestore()
        ),
    )
    return restored.state, restored.data


def restore_latest(manager: ocp.CheckpointManager, target: Any) -> tuple[int, Any, dict] | None:
    """The newest readable checkpoint as ``(step, state, data_state)``; None if there is none.

    A checkpoint that fails to read is skipped with a warning (the previous one is tried);
    if none can be read, raises :class:`CheckpointError` rather than silently restarting
    and overwriting them.
    """
    steps = sorted(manager.all_steps(), reverse=True)
    if not steps:
        return None
    errors = []
    for step in steps:
        try:
            state, data_state = restore(manager, step, target)
        except Exception as e:  # noqa: BLE001 - any read failure means "try an older one"
            msg = (
                f"checkpoint {step} in {manager.directory} cannot be read: {type(e).__name__}: {e}"
            )
            logging.warning("%s; trying an older checkpoint.", msg)
            errors.append(msg)
            continue
        if errors:
            logging.warning("Resumed from checkpoint %d after skipping unreadable ones.", step)
        return step, state, data_state
    raise CheckpointError(
        "No checkpoint under "
        f"{manager.directory} can be restored into this run's state:\n  "
        + "\n  ".join(m[:500] for m in errors)
        + "\nIf the workdir belongs to a different model or config, use a new --workdir; "
        "if the checkpoints are damaged, move the checkpoints folder away to start over."
    )
