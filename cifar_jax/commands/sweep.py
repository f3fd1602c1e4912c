"""Ablation sweeps: ``python -m cifar_jax sweep --config=configs/sweeps/<name>.py --workdir=DIR``.

Flags only; the sweep runner (plans, parallel trials, summaries) is
:mod:`cifar_jax.studies.sweep`, which documents the outputs.
"""

from __future__ import annotations

import sys

from absl import app, flags
from ml_collections import config_flags

from cifar_jax.commands import cli
from cifar_jax.errors import ConfigError
from cifar_jax.studies.sweep import (
    SWEEP_FIELDS,
    parallel_trials,
    run_sweep,
    trial_commands,
    variant_config,
)


def run() -> None:
    """The command line. Flags are defined here, not at import: sweep config files import
    this module, which must then not define ``--config`` a second time."""
    config_flag = config_flags.DEFINE_config_file(
        "config", None, "Sweep config file (configs/sweeps/*.py)."
    )
    workdir_flag = flags.DEFINE_string("workdir", None, "Directory for the runs and the summary.")
    list_flag = flags.DEFINE_bool("list", False, "Print one command per trial and exit.")
    trial_flag = flags.DEFINE_integer("trial", None, "Train trial K alone (see --list).")
    summarize_flag = flags.DEFINE_bool(
        "summarize", False, "Only collect the finished trials into the summary tables."
    )

    def main(argv: list[str]) -> None:
        if len(argv) > 1:
            raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
        with cli.user_errors():
            sweep = config_flag.value
            missing = sorted(set(SWEEP_FIELDS) - set(sweep.keys()))
            if missing:
                raise ConfigError(
                    f"the sweep config lacks {missing}; build it with "
                    "cifar_jax.studies.sweep.sweep_config(...)."
                )
            if list_flag.value:
                print("\n".join(trial_commands(sweep, sys.argv)))
                return
            parallel = parallel_trials(sweep) > 1 and trial_flag.value is None
            if parallel and not summarize_flag.value and cli.distributed_requested():
                raise ConfigError(
                    "parallel_trials > 1 runs each trial as its own single-process run; it "
                    "cannot be part of a multi-process launch (--coordinator_address, "
                    "CIFAR_JAX_COORDINATOR or CIFAR_JAX_DISTRIBUTED). Drop one of the two."
                )
            first = variant_config(sweep, next(iter(sweep.variants)), sweep.seeds[0])
            cli.prepare_process(first)
            run_sweep(sweep, workdir_flag.value, trial=trial_flag.value,
                      train_runs=not summarize_flag.value, argv=sys.argv)  # fmt: skip

    flags.mark_flags_as_required(["config", "workdir"])
    app.run(main, flags_parser=cli.parse_flags)
