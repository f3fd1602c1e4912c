"""Reproduce the seed reports: ``python -m cifar_jax reproduce --workdir=DIR [--results=...]``.

Flags only; the results, their recipes, planning, estimates and tables are
:mod:`cifar_jax.studies.reproduction`, which documents them.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from absl import app, flags

from cifar_jax import validation
from cifar_jax import workdir as workdir_lib
from cifar_jax.commands import cli
from cifar_jax.errors import ConfigError
from cifar_jax.studies.reproduction import (
    Run,
    _hms,
    estimate,
    list_results,
    plan,
    run_all,
    select,
    summarize,
    to_markdown,
    write,
)

_WORKDIR = flags.DEFINE_string("workdir", None, "Folder for the runs and the tables.")
_RESULTS = flags.DEFINE_string("results", "all", "Comma-separated result ids or report numbers.")
_SEEDS = flags.DEFINE_integer("seeds", 3, "Seeds per result (the recipe's seed, +1, +2, ...).")
_BUDGET = flags.DEFINE_float("budget", 1.0, "Fraction of each recipe's epochs (reduced run).")
_DATA_FRACTION = flags.DEFINE_float("data_fraction", 1.0, "Fraction of the training images.")
_DATA_DIR = flags.DEFINE_string("data_dir", "", "Data folder for every run ('' = the config's).")
_LIST = flags.DEFINE_bool("list", False, "List the results and exit.")
_ESTIMATE = flags.DEFINE_bool(
    "estimate",
    False,
    "Time the results without finished runs (saved to <workdir>/estimates.json as each is "
    "timed; results already there are not timed again: delete it to re-time).",
)
_ESTIMATE_STEPS = flags.DEFINE_integer("estimate_steps", 12, "Steps timed per --estimate.")
_SUMMARIZE = flags.DEFINE_bool("summarize", False, "Only write the tables from finished runs.")
_SCALE_TO_DATA = flags.DEFINE_bool(
    "scale_to_data",
    False,
    "For a data folder holding a subset of the data set (e.g. the CIFAR-100 mini subset): "
    "scale each recipe's validation split to its training images in the recipe's proportion. "
    "Such runs get their own folders and are marked 'mini subset, not comparable'.",
)


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    with cli.user_errors():
        if _LIST.value:
            print(list_results())
            return
        if not _WORKDIR.value:
            raise ConfigError("--workdir is required (the folder for the runs and tables).")
        results = select(_RESULTS.value)
        workdir = workdir_lib.prepare(_WORKDIR.value)
        runs = plan(results, _SEEDS.value, workdir, _BUDGET.value, _DATA_FRACTION.value,
                    _DATA_DIR.value, _SCALE_TO_DATA.value)  # fmt: skip
        for run in runs:
            validation.validate_config(run.config)
        cli.prepare_process(runs[0].config)
        from cifar_jax import train

        with train.hold_workdir(workdir, what="reproduce"):  # one reproduce per workdir
            _run_and_summarize(runs, workdir)


def _run_and_summarize(runs: list[Run], workdir: str) -> None:
    """Trains (or times) the plan, then writes the tables."""
    estimates_path = os.path.join(workdir, "estimates.json")
    estimates: dict[str, dict[str, Any]] = {}
    if os.path.exists(estimates_path):
        with open(estimates_path, encoding="utf-8") as f:
            estimates = json.load(f)
    if _ESTIMATE.value:
        estimates = estimate(
            runs, _ESTIMATE_STEPS.value, workdir, estimates,
            lambda done: workdir_lib.write_json_atomic(estimates_path, done),
        )  # fmt: skip
    elif not _SUMMARIZE.value:
        started = time.time()
        run_all(runs, {k: v["estimated_seconds"] for k, v in estimates.items()
                       if v.get("estimated_seconds")})  # fmt: skip
        print(f"Trained for {_hms(time.time() - started)}.", flush=True)
    summary = summarize(runs, _BUDGET.value, _DATA_FRACTION.value, estimates,
                        _SEEDS.value, _WORKDIR.value)  # fmt: skip
    write(summary, workdir)
    print(to_markdown(summary), flush=True)


def run() -> None:
    app.run(main, flags_parser=cli.parse_flags)
