"""Data parallelism: the device mesh, batch shardings, batch-size checks, and the context a
jitted step is traced in (its kernels chosen by the lowering platform, its batch sharded
over the mesh). Shared by training and every read-only command, so none of them needs the
trainer to place a batch on the devices.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from cifar_jax.errors import ConfigError
from cifar_jax.kernels import lowering, onednn


def create_mesh(devices: list | None = None) -> Mesh:
    """A 1-D ``data`` mesh over every device of every process."""
    devices = jax.devices() if devices is None else devices
    return Mesh(np.asarray(devices), ("data",))


def replicated(mesh: Mesh) -> NamedSharding:
    """The sharding of what every device holds whole (the train state, metrics)."""
    return NamedSharding(mesh, P())


def batch_sharded(mesh: Mesh) -> NamedSharding:
    """The sharding of a global batch: split along its first axis over the ``data`` axis."""
    return NamedSharding(mesh, P("data"))


def check_batch_size(batch_size: int, mesh: Mesh, name: str = "batch_size") -> None:
    n = mesh.devices.size
    if batch_size <= 0 or batch_size % n:
        raise ConfigError(
            f"{name}={batch_size} cannot be split evenly over the {n} devices "
            f"({jax.process_count()} process(es)); use a positive multiple of {n}."
        )


def to_global(batch: dict[str, np.ndarray], sharding: NamedSharding) -> dict[str, jax.Array]:
    """Assembles each process's slice of a global batch into one sharded global array."""
    return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in batch.items()}


def traced_on(mesh: Mesh, step: Callable, *, bf16_kernel_grads: bool = False) -> Callable:
    """``step`` with its kernels chosen by the platform it is lowered for
    (:func:`cifar_jax.kernels.lowering.platform_step`: CPU kernels only in CPU programs),
    traced knowing its batch is sharded over ``mesh`` (so the CPU convs run per device
    shard, :func:`cifar_jax.kernels.onednn.batch_sharded_over`). Every jitted step that
    runs a model goes through it: train, eval, TTA, predict, analyze.
    ``bf16_kernel_grads``: ``config.cpu_bf16_kernel_grads`` for a train step
    (:func:`cifar_jax.kernels.onednn.bf16_kernel_grads`)."""

    @contextlib.contextmanager
    def context() -> Iterator[None]:
        with onednn.batch_sharded_over(mesh), onednn.bf16_kernel_grads(bf16_kernel_grads):
            yield

    return lowering.platform_step(step, context)


def traced_portable(step: Callable) -> Callable:
    """``step`` traced for a program that leaves the package (``jax.export``, ONNX): XLA's
    plain ops on every platform, no CPU custom call and no platform switch
    (:func:`cifar_jax.kernels.lowering.portable_step`). Unsharded: the file's user picks
    the devices. The exported inference function goes through it."""
    return lowering.portable_step(step)
