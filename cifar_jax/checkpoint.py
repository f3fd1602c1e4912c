"""Orbax checkpoints of the train state and the data iterator.

Orbax writes each checkpoint into a temporary directory and renames it only once every
file is written (``commit_success.txt`` marks it complete), so a run killed mid-save
never leaves a half-written checkpoint that looks valid, and older checkpoints are only
deleted (``max_to_keep``) after a newer one is committed. If the newest checkpoint still
cannot be read (disk errors, a file truncated by hand), :func:`restore_latest` warns and
falls back to the previous one instead of losing the run.

Beside the periodic checkpoints (``<workdir>/checkpoints``), :class:`BestCheckpoint` keeps
the state of the best validation result so far under ``<workdir>/best`` (when and what is
best is :mod:`cifar_jax.tracking`'s business).
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterator
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
        max_to_keep=keep,
        create=not read_only,
        read_only=read_only,
        # Synchronous: a failed write (disk full) surfaces at the save that failed, before
        # training goes on; CIFAR-sized states save in well under a second.
        enable_async_checkpointing=False,
        # Half-written checkpoints of a killed run never look valid; clear them on start.
        cleanup_tmp_directories=not read_only,
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


def restore_latest(
    manager: ocp.CheckpointManager, target: Any, hint: str = ""
) -> tuple[int, Any, dict] | None:
    """The newest readable checkpoint as ``(step, state, data_state)``; None if there is none.

    A checkpoint that fails to read is skipped with a warning and moved aside to
    ``<workdir>/checkpoints_unreadable/`` (never deleted), and the previous one is
    restored. If none can be read, raises :class:`CheckpointError` (with ``hint``)
    rather than silently restarting and overwriting them.
    """
    steps = sorted(manager.all_steps(), reverse=True)
    if not steps:
        return None
    errors = []
    for step in steps:
        try:
            state, data_state = restore(manager, step, target)
        except Exception as e:  # noqa: BLE001 - any read failure means "try an older one"
            msg = f"checkpoint {step} in {manager.directory} cannot be read: {type(e).__name__}"
            logging.warning("%s: %s; trying an older checkpoint.", msg, str(e)[:300])
            errors.append((step, f"{msg}: {str(e)[:300]}"))
            continue
        if errors:
            for bad_step, _ in errors:
                _move_aside(manager, bad_step)
            logging.warning("Resumed from checkpoint %d after skipping unreadable ones.", step)
        return step, state, data_state
    raise CheckpointError(
        f"no checkpoint under {manager.directory} can be restored into this run's state "
        f"({len(errors)} tried; the newest failed with: {errors[0][1]}). "
        + (hint + " " if hint else "")
        + "If the workdir belongs to another model or config, use a new --workdir; if the "
        "checkpoints are damaged, move the checkpoints folder away to start over."
    )


def _move_aside(manager: ocp.CheckpointManager, step: int) -> None:
    """Moves an unreadable checkpoint out of the manager's sight, keeping its files."""
    src = os.path.join(str(manager.directory), str(step))
    if jax.process_index() == 0 and os.path.isdir(src):
        dest_root = os.path.join(os.path.dirname(str(manager.directory)), "checkpoints_unreadable")
        os.makedirs(dest_root, exist_ok=True)
        dest = os.path.join(dest_root, f"{step}-{int(time.time())}")
        os.replace(src, dest)
        logging.warning("Moved unreadable checkpoint %s to %s.", src, dest)
    manager.reload()


def stored_state_tree(path: str) -> Any:
    """The tree of the train state saved in the checkpoint folder ``path``
    (``<workdir>/<name>/<step>``): each array's metadata (shape, dtype) at its path, read
    without restoring anything."""
    verbosity = logging.get_verbosity()
    logging.set_verbosity(logging.ERROR)  # Orbax warns about files evaluation does not need
    try:
        meta = ocp.PyTreeCheckpointer().metadata(os.path.join(path, "state"))
        return meta.item_metadata.tree
    finally:
        logging.set_verbosity(verbosity)


def _paths(tree: Any) -> dict[str, tuple[int, ...]]:
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {jax.tree_util.keystr(p): tuple(getattr(v, "shape", ())) for p, v in leaves}


def structure_differences(on_disk: Any, expected: Any) -> list[str]:
    """What differs between the checkpoint's and the model's arrays (paths and shapes)."""
    disk, want = _paths(on_disk), _paths(expected)
    out = [
        f"{k}: checkpoint {disk[k]}, model {want[k]}"
        for k in want
        if k in disk and disk[k] != want[k]
    ]
    out += [f"{k} {want[k]}: not in the checkpoint" for k in want if k not in disk]
    out += [f"{k} {disk[k]}: not in the model" for k in disk if k not in want]
    return out


@contextlib.contextmanager
def read_only_manager(workdir: str, name: str = LATEST) -> Iterator[ocp.CheckpointManager]:
    """A read-only manager of ``<workdir>/<name>`` (creates, cleans and deletes nothing),
    closed on exit; Orbax's warnings meanwhile (that it is read-only) are silenced."""
    verbosity = logging.get_verbosity()
    logging.set_verbosity(logging.ERROR)  # Orbax warns that a read-only manager is read-only
    try:
        manager = create_manager(workdir, keep=1, read_only=True, name=name)
        try:
            yield manager
        finally:
            manager.close()
    finally:
        logging.set_verbosity(verbosity)


def restore_part(manager: ocp.CheckpointManager, step: int, target: dict[str, Any]) -> Any:
    """Restores only the top-level fields of the saved train state that ``target`` has
    (e.g. ``params``, ``batch_stats``, ``step``), onto ``target``'s structure; the rest
    (the optimizer state, the data iterator) is not read, so a state that holds more than
    ``target`` restores as well."""
    return manager.restore(
        step,
        args=ocp.args.Composite(
            state=ocp.args.PyTreeRestore(
                item=target,
                restore_args=ocp.checkpoint_utils.construct_restore_args(target),
                partial_restore=True,
            )
        ),
    ).state


class BestCheckpoint:
    """The best-validation checkpoint under ``<workdir>/best`` (one kept).

    Saved synchronously, so a periodic checkpoint that records a best step is only ever
    written after that best checkpoint is complete. On a resume, best checkpoints newer
    than the resumed state (left by the interrupted run) are deleted: the resumed run
    recomputes them.
    """

    def __init__(self, workdir: str, state):
        self.manager = create_manager(workdir, keep=1, name=BEST)
        best_step = int(state.val_tracker.best_step)
        for step in self.manager.all_steps():
            if step != best_step:
                logging.info("Deleting best checkpoint %d (newer than the resumed state).", step)
                self.manager.delete(step)

    def save(self, step: int, state, data_state: dict) -> None:
        save(self.manager, step, state, data_state)
        self.manager.wait_until_finished()

    def restore(self, state):
        """The best checkpoint's state, restored onto ``state``'s structure and shardings."""
        step = int(state.val_tracker.best_step)
        if step < 0 or step not in self.manager.all_steps():
            raise CheckpointError(
                f"no best checkpoint for step {step} in {self.manager.directory}; "
                "use --config.test_checkpoint=final, or rerun in a new workdir."
            )
        restored, _ = restore(self.manager, step, state)
        return restored

    def close(self) -> None:
        self.manager.close()


def config_differences(workdir: str, config: Any) -> list[str]:
    """Fields whose value differs from the run recorded in ``<workdir>/config.json``."""
    path = os.path.join(workdir, "config.json")
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as f:
        before = json.load(f)
    now = json.loads(json.dumps(config.to_dict(), default=str))
    return [
        f"{key}: {before.get(key)!r} -> {now.get(key)!r}"
        for key in sorted(set(before) | set(now))
        if before.get(key) != now.get(key)
    ]
