"""SIGTERM / SIGINT during training: finish the step, save, exit with a resume hint.

Cluster schedulers send SIGTERM before they kill a preempted job, and users press
Ctrl-C. Either way the run should lose nothing: the handler only records the signal, the
training loop notices it after the current step, saves a checkpoint and stops with
:class:`Preempted`, whose message says to rerun the same command to resume.
"""

from __future__ import annotations

import signal
from types import FrameType
from typing import Any

import numpy as np

from cifar_jax.errors import CifarJaxError


class Preempted(CifarJaxError):
    """Training stopped on a signal after saving a checkpoint."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.exit_code = 128 + signum  # the shell convention for "killed by signal N"


class StopRequest:
    """Records SIGTERM / SIGINT instead of dying mid-step; restores the old handlers.

    :meth:`poll`, once per train step, says whether to stop after it. In one process that
    is the local flag. In several, every process must stop after the *same* step: one
    that stops alone enters the collective checkpoint save while the others enter the
    next collective train step, and both wait forever. A scheduler that preempts one node
    signals only that node's process. So each poll dispatches a tiny all-reduce (a max
    over one int32 pair per device: the signal and "process 0 lost the workdir lock") and
    reads the previous poll's result: every process reads the same value at the same
    step, one step late, so the host never waits for it (the train step it follows has
    already been dispatched). Measured cost: docs/errors.md ("Stops agreed by every
    process").
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self, mesh: Any = None, lock: Any = None):
        """``mesh``: the run's mesh in a multi-process run (None: decide locally).
        ``lock``: the :class:`~cifar_jax.workdir.WorkdirLock` this process holds, if any."""
        self.signum: int | None = None
        self.lock_lost = False  # the stop is for a lost workdir lock (in some process)
        self._lock = lock
        self._previous: dict[int, object] = {}
        self._agree = None
        self._pending: Any = None
        if mesh is not None:
            import jax
            import jax.numpy as jnp
            from jax.sharding import NamedSharding
            from jax.sharding import PartitionSpec as P

            from cifar_jax import parallel

            self._flags_sharding = NamedSharding(mesh, P(mesh.axis_names))
            self._agree = jax.jit(
                lambda flags: jnp.max(flags, axis=0), out_shardings=parallel.replicated(mesh)
            )

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        del frame
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: the user really wants out now
        self.signum = signum

    def __enter__(self) -> StopRequest:
        for sig in self.SIGNALS:
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: leave signals alone
                pass
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _local(self) -> np.ndarray:
        lost = self._lock is not None and bool(self._lock.lost)
        return np.array([self.signum or 0, int(lost)], np.int32)

    def requested(self) -> bool:
        """Whether this process got a signal."""
        return self.signum is not None

    def poll(self) -> bool:
        """Whether to stop after the current step (agreed by every process, see above)."""
        if self._agree is None:
            flags = self._local()
        else:
            import jax

            local = np.tile(self._local(), (jax.local_device_count(), 1))
            previous = self._pending
            self._pending = self._agree(
                jax.make_array_from_process_local_data(
                    self._flags_sharding, local, (jax.device_count(), 2)
                )
            )
            if previous is None:
                return False
            flags = np.asarray(previous)
        if flags[0] and self.signum is None:
            self.signum = int(flags[0])  # another process's signal: stop as it does
        self.lock_lost = bool(flags[1])
        return bool(flags[0] or flags[1])

    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum else "no signal"
