"""Shared command-line plumbing: flag parsing with clear errors, and error reporting.

Every command (``python -m cifar_jax <command>``) uses these, so a typo in ``--config.<field>`` or
a missing data file reads the same everywhere: one paragraph on stderr naming the
problem and the fix, exit status 1 (2 for bad flags), and a traceback only with
``--debug``.
"""

from __future__ import annotations

import contextlib
import logging as std_logging
import os
import sys
import threading
from collections.abc import Iterator

import ml_collections
from absl import flags, logging

from cifar_jax import runtime, validation
from cifar_jax.errors import CifarJaxError

_DEBUG = flags.DEFINE_bool("debug", False, "Show full tracebacks for errors.")
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "host:port of process 0 for multi-process runs (launch.sh)."
)
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Processes in a multi-process run.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index (0-based).")


def _fail(message: str, status: int) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    # os._exit, not sys.exit: after a failed checkpoint write, library threads (Orbax,
    # TensorStore) would otherwise print pages of shutdown noise below the message.
    os._exit(status)


def parse_flags(argv: list[str]) -> list[str]:
    """absl flag parsing, with config-field typos reported as one clear line."""
    try:
        remaining = flags.FLAGS(argv)
        _check_config_file_loaded()
        return remaining
    except flags.Error as e:
        _fail(f"{e}\nRun with --helpfull to list the flags.", 2)
    except OSError as e:  # config_flags could not load the --config file
        _config_file_failed(e)
    except (AttributeError, KeyError) as e:
        # ml_collections raises these for --config.<field> that the config lacks.
        field = str(e).strip("\"'")
        bad = [a for a in argv if a.startswith("--config.") and field in a]
        _fail(
            f"unknown config field {field!r} in {bad[0] if bad else 'a --config override'}. "
            "Check the spelling; every field is listed and documented in "
            "cifar_jax/config/fields.py.",
            2,
        )
    return []  # unreachable


def _check_config_file_loaded() -> None:
    """ml_collections defers a failed config-file load to first use; surface it now."""
    if "config" not in flags.FLAGS or flags.FLAGS["config"].value is None:
        return
    try:
        flags.FLAGS["config"].value.keys()
    except Exception as e:  # noqa: BLE001 - any failure to load the user's config file
        _config_file_failed(e)


def _config_file_failed(error: BaseException) -> None:
    given = [a for a in sys.argv if a.startswith("--config=")]
    detail = " ".join(str(error).split())
    _fail(
        f"cannot load the config file {given[0] if given else '(--config)'}: {detail[:600]}. "
        "Check the path (e.g. configs/lenet.py) and that the file defines get_config().",
        2,
    )


def _drop_library_tracebacks(record: std_logging.LogRecord) -> bool:
    return not ("/orbax/" in record.pathname and record.levelno >= std_logging.ERROR)


def prepare(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Validates a training config (all of it, before any data is read) and sets up the
    process for it. Validation imports jax but does not start its backend, so the XLA
    flags prepare_process sets still apply."""
    validation.validate_config(config)
    prepare_process(config)
    return config


def define_run_flags(checkpoint_help: str) -> tuple[flags.FlagHolder, ...]:
    """``--workdir`` (required), ``--checkpoint`` and ``--data_dir`` of a command that
    reads one finished run (evaluate, report, predict), for :func:`load_workdir_run`."""
    workdir = flags.DEFINE_string("workdir", None, "Workdir of a training run.")
    checkpoint = flags.DEFINE_string(
        "checkpoint", "latest", f"{checkpoint_help}: latest, best or a step number."
    )
    data_dir = flags.DEFINE_string("data_dir", None, "Replaces the run's data_dir.")
    flags.mark_flag_as_required("workdir")
    return workdir, checkpoint, data_dir


def load_workdir_run(workdir: str, checkpoint: str, data_dir: str | None):
    """What every workdir command (evaluate, report, predict, analyze) starts with: the
    run's config validated and the process set up for it (before JAX starts), then the
    run's model, checkpoint (``latest``, ``best`` or a step) and data loaded."""
    from cifar_jax import runs

    config = prepare(runs.read_config(workdir))
    return runs.load_run(workdir, runs.parse_checkpoint(checkpoint), data_dir, config)


def prepare_process(config: ml_collections.ConfigDict) -> None:
    """Logging, XLA flags and jax.distributed: before JAX starts its backend."""
    if not flags.FLAGS["verbosity"].present:
        # Orbax and Grain log every save at INFO; keep the console to our progress lines.
        logging.set_verbosity(logging.WARNING)
    if not _DEBUG.value:
        # When a checkpoint write fails, Orbax/TensorStore threads print their own
        # tracebacks (and asyncio "event loop is closed" ones) while the main thread
        # raises; the user gets one clear error instead. --debug brings them back.
        logging.get_absl_handler().addFilter(_drop_library_tracebacks)
        sys.unraisablehook = lambda unraisable: None
        threading.excepthook = lambda args: logging.debug("thread failed: %s", args.exc_value)
    runtime.configure_process(
        config.reuse_host_memory, config.cpu_fast_conv_flags, config.deterministic
    )
    runtime.initialize_distributed(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)


def distributed_requested() -> bool:
    """Whether this process is to join a multi-process run (the flags above, or the
    environment launch.sh and clusters set; see runtime.initialize_distributed)."""
    return bool(
        _COORDINATOR.value
        or os.environ.get("CIFAR_JAX_COORDINATOR")
        or os.environ.get("CIFAR_JAX_DISTRIBUTED") == "auto"
    )


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Turns CifarJaxError into a clean message and exit status 1 (traceback with --debug)."""
    try:
        yield
    except CifarJaxError as e:
        if _DEBUG.value:
            raise
        _fail(f"{e}", getattr(e, "exit_code", 1))
    except KeyboardInterrupt:
        _fail("interrupted.", 130)
