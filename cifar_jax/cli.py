"""Shared command-line plumbing: flag parsing with clear errors, and error reporting.

Every ``python -m cifar_jax.<command>`` uses these, so a typo in ``--config.<field>`` or
a missing data file reads the same everywhere: one paragraph on stderr naming the
problem and the fix, exit status 1 (2 for bad flags), and a traceback only with
``--debug``.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator

import ml_collections
from absl import flags, logging

from cifar_jax import config_base, runtime
from cifar_jax.errors import CifarJaxError

_DEBUG = flags.DEFINE_bool("debug", False, "Show full tracebacks for errors.")
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "host:port of process 0 for multi-process runs (launch.sh)."
)
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Processes in a multi-process run.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index (0-based).")


def _fail(message: str, status: int) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(status)


def parse_flags(argv: list[str]) -> list[str]:
    """absl flag parsing, with config-field typos reported as one clear line."""
    try:
        return flags.FLAGS(argv)
    except flags.Error as e:
        _fail(f"{e}\nRun with --helpfull to list the flags.", 2)
    except (AttributeError, KeyError) as e:
        # ml_collections raises these for --config.<field> that the config lacks.
        field = str(e).strip("\"'")
        bad = [a for a in argv if a.startswith("--config.") and field in a]
        _fail(
            f"unknown config field {field!r} in {bad[0] if bad else 'a --config override'}. "
            "Check the spelling; every field is listed and documented in "
            "cifar_jax/config_base.py.",
            2,
        )
    return []  # unreachable


def prepare(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Validates the config and sets up the process (XLA flags, jax.distributed)."""
    if not flags.FLAGS["verbosity"].present:
        # Orbax and Grain log every save at INFO; keep the console to our progress lines.
        logging.set_verbosity(logging.WARNING)
    config_base.validate_config(config)
    runtime.configure_xla_flags(config.cpu_fast_conv_flags)
    runtime.initialize_distributed(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
    from cifar_jax import models

    models.build_model(config, 10)  # rejects an unknown model / activation now, not later
    return config


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Turns CifarJaxError into a clean message and exit status 1 (traceback with --debug)."""
    try:
        yield
    except CifarJaxError as e:
        if _DEBUG.value:
            raise
        _fail(f"{e}", 1)
    except KeyboardInterrupt:
        _fail("interrupted.", 130)
