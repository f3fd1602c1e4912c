"""cifar_jax: reproducible JAX/Flax training of CNNs on CIFAR-10 and CIFAR-100.

A trained run from Python (README, "Use a trained model"):

    import cifar_jax
    run = cifar_jax.load_run("runs/lenet", checkpoint="best")   # or "latest", or a step
    run.predict(images).classes        # uint8 (N, 32, 32, 3) arrays or image paths

``load_run`` is :func:`cifar_jax.runs.load_run`, imported on first use so that
``import cifar_jax`` stays cheap (no JAX).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from cifar_jax.runs import LoadedRun, load_run

__all__ = ["LoadedRun", "__version__", "load_run"]


def __getattr__(name: str) -> Any:
    if name in ("load_run", "LoadedRun"):
        from cifar_jax import runs

        return getattr(runs, name)
    raise AttributeError(f"module 'cifar_jax' has no attribute {name!r}")
