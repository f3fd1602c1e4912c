"""The CPU speed levers: declared switches the kernels read at trace time.

Each field of :class:`Levers` turns one CPU formulation on (the default, what training
runs) or off (the plain XLA form it replaces), so a benchmark can A/B one lever on the
real train step (``python -m cifar_jax bench_levers``, docs/performance.md) and a test
can compare the programs, without patching module attributes. They only choose how a
value is computed: every lever gives the same values up to float rounding (most of them
bit-identical), and none acts in a GPU/TPU program.

Read at trace time (:func:`current`): a step traced inside ``with switched(onednn=False)``
keeps that choice, and a function jitted and traced before keeps the choice of its trace
(``jax.jit`` does not re-trace when levers change), so build the step inside the block.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
from collections.abc import Iterator


@dataclasses.dataclass(frozen=True)
class Levers:
    """Which CPU formulations traced code uses (all on by default)."""

    # Convolutions through oneDNN (FFI custom call, kernels/onednn.py) instead of XLA's.
    onednn: bool = True
    # Conv inputs kept in memory for the kernel-gradient transposes of XLA's convs
    # (fast_ops.conv_input).
    materialize: bool = True
    # LeNet's first conv as a direct tap sum (kernels/small_conv.py).
    small_conv: bool = True
    # Max-pool gradient as one broadcast select (16+ channels) rather than stacked selects.
    pool_broadcast: bool = True
    # Max-pool from four strided views with a saved-index gradient, not select-and-scatter.
    cpu_pool: bool = True
    # im2col for convs on maps smaller than the kernel.
    im2col: bool = True
    # Training-mode BatchNorm with the hand-written gradient.
    fast_bn: bool = True
    # Exact GELU with the hand-written gradient (fast_ops.gelu).
    fast_gelu: bool = True


NAMES: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(Levers))
DEFAULT = Levers()

_LEVERS: contextvars.ContextVar[Levers] = contextvars.ContextVar(
    "cifar_jax_levers", default=DEFAULT
)


def current() -> Levers:
    """The levers in force for the code being traced now."""
    return _LEVERS.get()


@contextlib.contextmanager
def switched(**changes: bool) -> Iterator[Levers]:
    """Code traced inside sees the current levers with ``changes`` applied, e.g.
    ``switched(onednn=False)``; yields them. Unknown names raise a ValueError that lists
    the valid ones."""
    unknown = sorted(set(changes) - set(NAMES))
    if unknown:
        raise ValueError(
            f"unknown lever(s) {', '.join(unknown)}; choose from {', '.join(NAMES)} "
            "(cifar_jax.kernels.levers.Levers)"
        )
    bad = {k: v for k, v in changes.items() if not isinstance(v, bool)}
    if bad:
        raise ValueError(f"levers are switched with True/False, got {bad}")
    levers = dataclasses.replace(current(), **changes)
    token = _LEVERS.set(levers)
    try:
        yield levers
    finally:
        _LEVERS.reset(token)
