"""SIGTERM / SIGINT during training: finish the step, save, exit with a resume hint.

Cluster schedulers send SIGTERM before they kill a preempted job, and users press
Ctrl-C. Either way the run should lose nothing: the handler only records the signal, the
training loop notices it after the current step, saves a checkpoint and stops with
:class:`Preempted`, whose message says to rerun the same command to resume.
"""

from __future__ import annotations

import signal
from types import FrameType

import numpy as np

from cifar_jax.errors import CifarJaxError


class Preempted(CifarJaxError):
    """Training stopped on a signal after saving a checkpoint."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.exit_code = 128 + signum  # the shell convention for "killed by signal N"


class StopRequest:
    """Records SIGTERM / SIGINT instead of dying mid-step; restores the old handlers."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self):
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

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

    def requested(self, all_processes: bool = False) -> bool:
        """Whether any process got a signal; ``all_processes`` agrees across processes."""
        local = self.signum is not None
        if not all_processes:
            return local
        from jax.experimental import multihost_utils

        flags = multihost_utils.process_allgather(np.array([self.signum or 0], np.int32))
        signums = np.asarray(flags).ravel()
        if self.signum is None and signums.any():
            self.signum = int(signums[signums > 0][0])
        return bool(signums.any())

    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum else "no signal"
