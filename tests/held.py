"""The test side of cifar_jax/holds.py: hold a subprocess at a known point, then let go.

A test passes :func:`env` to the processes it starts, waits with :func:`wait` until the
wanted number of them stand at the point (failing, never skipping, if one ends first),
does what it tests, and lets them go with :func:`release`.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from cifar_jax import holds


def env(folder: Path, *points: str, base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a process that stops at ``points`` (``name`` or ``name@step``)."""
    values = dict(os.environ if base is None else base)
    values.pop("XLA_FLAGS", None)
    values[holds.ENV] = ",".join(points)
    values[holds.ENV_DIR] = str(folder)
    return values


def wait(folder: Path, point: str, procs, count: int = 1, timeout: float = 300) -> set[int]:
    """The pids of the ``count`` processes standing at ``point``. Fails if a process of
    ``procs`` ends before they are all there, or after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        pids = {int(p.name.rsplit(".", 2)[-2]) for p in folder.glob(f"{point}.*.reached")}
        if len(pids) >= count:
            return pids
        ended = [p for p in procs if p.poll() is not None and p.pid not in pids]
        if ended:
            out, err = ended[0].communicate()
            raise AssertionError(
                f"process {ended[0].pid} ended (exit {ended[0].returncode}) before reaching "
                f"{point}: {(err or '')[-3000:]}{(out or '')[-1000:]}"
            )
        if time.monotonic() > deadline:
            raise AssertionError(f"{count} process(es) did not reach {point} in {timeout} s")
        time.sleep(0.01)


def settle(folder: Path, point: str, procs, timeout: float = 300) -> set[int]:
    """Waits until every process of ``procs`` has ended or stands at ``point``; returns
    the pids standing there."""
    deadline = time.monotonic() + timeout
    while True:
        pids = {int(p.name.rsplit(".", 2)[-2]) for p in folder.glob(f"{point}.*.reached")}
        if all(p.pid in pids or p.poll() is not None for p in procs):
            return pids
        if time.monotonic() > deadline:
            raise AssertionError(f"processes neither ended nor reached {point} in {timeout} s")
        time.sleep(0.01)


def release(folder: Path, point: str) -> None:
    (folder / f"{point}.release").write_text("go")
