"""Test-only hold points: a run stopped at a known place until a test lets it go.

Tests of races (two runs on one workdir, a signal during training, eight processes taking
over one stale lock) must not depend on timing: a sleep that is long enough on one
machine is too short on a busy one, and a test that "skips if the run ended first" proves
nothing. Instead the code calls :func:`hold` at the places such tests need, and a test
that sets two environment variables stops the run there:

    CIFAR_JAX_HOLD=step@3,lock_takeover   # point[@step], comma-separated
    CIFAR_JAX_HOLD_DIR=/tmp/holds         # where the run and the test meet

At a named point the process writes ``<dir>/<point>[@<step>].<pid>.reached`` and waits
until ``<dir>/<point>[@<step>].release`` exists, then goes on. The test waits for the
``reached`` file (an event, not a guess), does what it tests (send a signal, start a
second run, ...), and creates the ``release`` file. Without ``CIFAR_JAX_HOLD`` (every real
run) :func:`hold` returns at once.

Points: ``step`` (after a train step is dispatched, before the stop check; with the step
number), ``save`` (before a checkpoint is saved; with its step), ``lock_read`` (a stale
lock was read and judged stale, before taking it over), ``lock_held`` (the lock was just
taken).
"""

from __future__ import annotations

import os
import time

ENV = "CIFAR_JAX_HOLD"
ENV_DIR = "CIFAR_JAX_HOLD_DIR"
TIMEOUT_SECONDS = 600.0  # a test that never releases its hold still ends


def _name(point: str, step: int | None) -> str:
    return point if step is None else f"{point}@{step}"


def wanted(point: str, step: int | None = None) -> bool:
    """Whether ``CIFAR_JAX_HOLD`` names this point (at this step)."""
    spec = os.environ.get(ENV)
    if not spec:
        return False
    return _name(point, step) in {x.strip() for x in spec.split(",")}


def hold(point: str, step: int | None = None) -> None:
    """Stops here until the test releases this point (only when the test asked for it)."""
    if not os.environ.get(ENV) or not wanted(point, step):
        return
    folder = os.environ.get(ENV_DIR)
    if not folder:
        raise RuntimeError(f"{ENV} is set but {ENV_DIR} is not: tell the run where to meet.")
    name = _name(point, step)
    with open(os.path.join(folder, f"{name}.{os.getpid()}.reached"), "w") as f:
        f.write(str(os.getpid()))
    release = os.path.join(folder, f"{name}.release")
    deadline = time.monotonic() + TIMEOUT_SECONDS
    while not os.path.exists(release):
        if time.monotonic() > deadline:
            raise RuntimeError(f"hold point {name} was never released ({release}).")
        time.sleep(0.005)
