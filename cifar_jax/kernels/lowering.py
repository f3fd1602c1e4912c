"""Which kernels a traced step uses, chosen by the platform it is lowered for.

The CPU kernels (oneDNN convs, materialized activations, the hand-written BatchNorm
gradient, the reshape max-pool) must be in CPU programs and never in GPU ones. Asking
``jax.default_backend()`` at trace time gets that wrong whenever a program is lowered for
another platform than the process's default (``jax.export`` for CUDA on a CPU machine, a
CPU step on a GPU host). :func:`platform_step` traces a step twice, once with the CPU
kernels and once without, and lets ``jax.lax.platform_dependent`` keep the branch of the
platform being lowered for; only that branch is lowered, so a CUDA module holds no CPU
custom call and the CPU program is the CPU step alone. Inside, :func:`cpu_kernels_on`
tells the layers which branch they are being traced for.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
from collections.abc import Callable, Iterator

import jax

_CPU_KERNELS: contextvars.ContextVar[bool | None] = contextvars.ContextVar(
    "cifar_jax_cpu_kernels", default=None
)


def cpu_kernels_on() -> bool:
    """Whether the code being traced may use the CPU kernels: set per lowering platform
    inside a :func:`platform_step`; outside one (a bare ``model.apply``, e.g. in a
    notebook), the process's default backend decides."""
    on = _CPU_KERNELS.get()
    return jax.default_backend() == "cpu" if on is None else on


@contextlib.contextmanager
def cpu_kernels(on: bool) -> Iterator[None]:
    token = _CPU_KERNELS.set(on)
    try:
        yield
    finally:
        _CPU_KERNELS.reset(token)


def platform_step(step: Callable, context: Callable[[], contextlib.AbstractContextManager]
                  = contextlib.nullcontext) -> Callable:  # fmt: skip
    """``step`` with its kernels chosen by the platform it is lowered for (see above).

    ``context()`` is entered around both traces (e.g. the batch mesh of the oneDNN convs).
    The two branches must return the same types, which they do: same step, other kernels.
    """

    def branch(on: bool) -> Callable:
        def run(*args):
            with cpu_kernels(on), context():
                return step(*args)

        return run

    @functools.wraps(step)
    def dispatched(*args):
        return jax.lax.platform_dependent(*args, cpu=branch(True), default=branch(False))

    return dispatched
