"""Process-level set-up that must happen before JAX starts its backend.

* XLA:CPU flags. In jaxlib 0.10 convolutions on CPU go through YNNPACK, which keeps
  only ~1.4 of 2 cores busy; ``--xla_cpu_experimental_ynn_fusion_type=-individual_convolution``
  sends them back to XLA's Eigen path, measured 2.5-4x faster for the conv nets here
  (``python -m cifar_jax.bench`` measures it). The flag only affects the CPU backend, so
  it is harmless on GPU hosts. XLA reads ``XLA_FLAGS`` when the backend starts (the first
  ``jax.devices()`` or computation), not at ``import jax``.
* ``jax.distributed`` for multi-process runs (see ``launch.sh``).
"""

from __future__ import annotations

import os

CPU_FAST_CONV_FLAG = "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution"


def backend_started() -> bool:
    """Whether JAX has already created its backends (flags set now would be ignored)."""
    try:
        from jax._src import xla_bridge

        return bool(xla_bridge._backends)  # noqa: SLF001 - no public query exists
    except (ImportError, AttributeError):
        return False


GPU_DETERMINISM_FLAGS = (
    "--xla_gpu_deterministic_ops=true",
    "--xla_gpu_exclude_nondeterministic_ops=true",
)


def configure_xla_flags(cpu_fast_conv: bool = True, deterministic: bool = False) -> None:
    """Adds the package's XLA flags to ``XLA_FLAGS``, leaving flags the user set alone."""
    wanted = []
    if cpu_fast_conv:
        wanted.append(CPU_FAST_CONV_FLAG)
    if deterministic:
        wanted.extend(GPU_DETERMINISM_FLAGS)
    flags = os.environ.get("XLA_FLAGS", "")
    for flag in wanted:
        if flag.split("=")[0] not in flags:
            flags = f"{flags} {flag}".strip()
    os.environ["XLA_FLAGS"] = flags


def initialize_distributed(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
) -> bool:
    """Joins a multi-process run; returns False (and does nothing) for a single process.

    Explicit arguments win; otherwise ``CIFAR_JAX_COORDINATOR``, ``CIFAR_JAX_NUM_PROCESSES``
    and ``CIFAR_JAX_PROCESS_ID`` (set by ``launch.sh``) are read; otherwise, on a cluster
    JAX knows (Slurm, Open MPI, ...), ``jax.distributed.initialize()`` finds them itself
    when ``CIFAR_JAX_DISTRIBUTED=auto``.
    """
    import jax

    coordinator_address = coordinator_address or os.environ.get("CIFAR_JAX_COORDINATOR")
    if num_processes is None and os.environ.get("CIFAR_JAX_NUM_PROCESSES"):
        num_processes = int(os.environ["CIFAR_JAX_NUM_PROCESSES"])
    if process_id is None and os.environ.get("CIFAR_JAX_PROCESS_ID"):
        process_id = int(os.environ["CIFAR_JAX_PROCESS_ID"])
    if coordinator_address and num_processes and num_processes > 1:
        # CPU processes need a collectives implementation; it does not affect GPU/TPU.
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(
            coordinator_address=coordinator_address,
            num_processes=num_processes,
            process_id=process_id,
        )
        return True
    if os.environ.get("CIFAR_JAX_DISTRIBUTED") == "auto":
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize()
        return jax.process_count() > 1
    return False
