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

:func:`portable_step` is the third choice, for programs that leave the package
(``jax.export`` files, ONNX): XLA's plain ops on every platform, no platform switch, and
max-pools as strided slices (:func:`portable_on`), so neither another runtime nor a
converter meets a custom call or an op it maps wrongly.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
from collections.abc import Callable, Iterator

import jax

# The platforms jax.export lowers for (``platforms=``), e.g. on a machine that has none.
PLATFORMS = ("cpu", "cuda", "rocm", "tpu")

_CPU_KERNELS: contextvars.ContextVar[bool | None] = contextvars.ContextVar(
    "cifar_jax_cpu_kernels", default=None
)
_PORTABLE: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "cifar_jax_portable", default=False
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


def portable_on() -> bool:
    """Whether the code being traced is a :func:`portable_step` (an exported program)."""
    return _PORTABLE.get()


def portable_step(step: Callable) -> Callable:
    """``step`` traced for any runtime: without the CPU kernels (the oneDNN conv is an
    FFI target only this package registers, so a deserialized program holding it would
    not run elsewhere) and without :func:`platform_step`'s switch (converters such as
    jax2onnx do not know ``platform_index``), for every platform alike. The layers read
    :func:`portable_on` to pick forms any runtime maps exactly (the max-pool as strided
    slices: jax2onnx 0.13 turns an NHWC reduce-window max into an ONNX MaxPool over the
    wrong axes). Same values as the training program up to float rounding."""

    @functools.wraps(step)
    def portable(*args):
        token = _PORTABLE.set(True)
        try:
            with cpu_kernels(False):
                return step(*args)
        finally:
            _PORTABLE.reset(token)

    return portable
