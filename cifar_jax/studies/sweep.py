"""Ablation sweeps: every variant x seed of a table, resumable, summarized as mean ± std.

    python -m cifar_jax sweep --config=configs/sweeps/activations.py --workdir=runs/act
    python -m cifar_jax sweep --config=configs/sweeps/activations.py --workdir=runs/act_small \\
        --config.budget=0.05 --config.data_fraction=0.2 --config.seeds='(0,)'

A sweep config (``configs/sweeps/<name>.py``) returns a ConfigDict with the base config
file, named variants (each a dict of base-config overrides), the seeds, and the budget.
Each run trains in ``<workdir>/<variant>/seed_<seed>/`` with :func:`train_and_evaluate`,
one after another on the local devices. A run whose ``results.json`` exists is not
redone; an interrupted run resumes from its checkpoint; a run that fails is recorded
(``error.txt``) and reported as failed while the others still run. Because every run is
seeded, rerunning a sweep reproduces its numbers exactly.

``--config.parallel_trials=N`` trains up to N trials at once instead, each in its own
process (``--trial=K``, with its output in ``<run dir>/trial.log``): small trials that
leave a GPU mostly idle then share it, each with ``XLA_CLIENT_MEM_FRACTION`` = 0.9/N of
its memory (each JAX process would otherwise preallocate 75% of the card). On a CPU run
it is allowed, with a note: the processes share the cores.

Outputs: ``<workdir>/summary.md`` (variant, mean ± std of test accuracy and loss, params,
train time), ``summary.json`` and ``summary.png`` (bars with error bars).
"""

from __future__ import annotations

import datetime
import json
import math
import numbers
import os
import shlex
import subprocess
import sys
import time
import traceback
from collections.abc import Mapping
from typing import IO, Any

import ml_collections

from cifar_jax import config as config_lib
from cifar_jax import preemption, runtime, validation
from cifar_jax import workdir as workdir_lib
from cifar_jax.errors import CifarJaxError, ConfigError, TrainingError

SWEEP_FIELDS = {
    "name": "short name of the table",
    "title": "one line saying what the table compares (and which report it comes from)",
    "base_config": "config file of the base recipe, relative to the repository (configs/x.py)",
    "base_overrides": "overrides applied to every variant (dict)",
    "variants": "variant name -> dict of overrides of the base config (a 'base_config' key "
    "starts that variant from another config file)",
    "seeds": "tuple of seeds; every variant runs once per seed",
    "budget": "fraction of each variant's epochs to train (1.0 = the full recipe)",
    "data_fraction": "fraction of each variant's training images to use (1.0 = all)",
    "parallel_trials": "trials trained at once, each in its own process (1 = one after "
    "another); each gets XLA_CLIENT_MEM_FRACTION = 0.9/N of a GPU's memory",
}


def sweep_config(
    *,
    name: str,
    title: str,
    base_config: str,
    variants: dict[str, dict[str, Any]],
    seeds: tuple[int, ...] = (0, 1, 2),
    base_overrides: dict[str, Any] | None = None,
) -> ml_collections.ConfigDict:
    """The ConfigDict every ``configs/sweeps/*.py`` returns (see SWEEP_FIELDS)."""
    for variant in variants:
        # A variant names a run folder and a ConfigDict key, which takes no dots; say so
        # here instead of ml_collections' ValueError from deep inside the ConfigDict.
        if not variant or "." in variant or "/" in variant:
            raise ConfigError(
                f"sweep {name!r}: variant name {variant!r} is not usable as a folder and "
                "config key; use letters, digits, '_' and '-' only (e.g. 'smoothing_0p3' "
                "for 0.3)."
            )
    c = ml_collections.ConfigDict()
    c.name = name
    c.title = title
    c.base_config = base_config
    c.base_overrides = dict(base_overrides or {})
    # sort_keys=False: the table keeps the order the variants are written in.
    c.variants = ml_collections.ConfigDict(
        {k: dict(v) for k, v in variants.items()}, sort_keys=False
    )
    c.seeds = tuple(seeds)
    c.budget = 1.0
    c.data_fraction = 1.0
    c.parallel_trials = 1
    return c


def parallel_trials(sweep: ml_collections.ConfigDict) -> int:
    """``sweep.parallel_trials``, checked: a whole number >= 1."""
    n = sweep.get("parallel_trials", 1)
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
        raise ConfigError(
            f"parallel_trials={n!r}: give a whole number >= 1, the trials trained at once "
            "(1 = one after another), e.g. --config.parallel_trials=4."
        )
    return int(n)


load_config_file = config_lib.load_config_file  # base_config paths resolve as --config= does


def variant_config(
    sweep: ml_collections.ConfigDict, variant: str, seed: int
) -> ml_collections.ConfigDict:
    """The full training config of one run: base + overrides + seed + budget."""
    if not 0 < sweep.budget <= 1 or not 0 < sweep.data_fraction <= 1:
        raise ConfigError(
            f"budget={sweep.budget} and data_fraction={sweep.data_fraction} must be in (0, 1]."
        )
    overrides = {**sweep.base_overrides.to_dict(), **sweep.variants[variant].to_dict()}
    # A variant may start from its own config file (e.g. one model per variant).
    config = load_config_file(overrides.pop("base_config", sweep.base_config))
    unknown = sorted(set(overrides) - set(config.keys()))
    if unknown:
        raise ConfigError(
            f"sweep variant {variant!r} overrides unknown config field(s) {unknown}; the "
            "fields are listed in cifar_jax/config/fields.py."
        )
    with config.unlocked():
        for key, value in overrides.items():
            config[key] = tuple(value) if isinstance(value, list) else value
    config.seed = int(seed)
    if sweep.budget < 1:
        if config.num_train_steps:
            config.num_train_steps = max(1, round(config.num_train_steps * sweep.budget))
        config.num_epochs = max(1, round(config.num_epochs * sweep.budget))
    if sweep.data_fraction < 1:
        config.max_train_examples = _reduced_examples(config, sweep.data_fraction)
    validation.validate_config(config)
    return config


def _reduced_examples(config: ml_collections.ConfigDict, fraction: float) -> int:
    """``fraction`` of the training split (after the validation split), at least 2 batches."""
    full = {"cifar10": 50_000, "cifar100": 50_000}[config.dataset]
    if config.data_source == "synthetic":
        full = config.synthetic_train_examples
    if config.class_subset:
        classes = 100 if config.dataset == "cifar100" else 10
        full = full * config.class_subset // classes
    available = config.max_train_examples or (full - config.val_examples)
    return max(2 * config.batch_size, int(available * fraction))


def run_dir(workdir: str, variant: str, seed: int) -> str:
    return os.path.join(workdir, variant, f"seed_{seed}")


def run_one(config: ml_collections.ConfigDict, directory: str) -> dict[str, Any]:
    """Trains one run unless it already finished; failures are recorded, not raised."""
    from cifar_jax import train  # after the XLA flags are set

    error_path = os.path.join(directory, "error.txt")
    earlier = collect(directory)
    if earlier["status"] == "done":
        return earlier
    try:
        results = train.train_and_evaluate(config, directory)
    except (preemption.Preempted, workdir_lib.WorkdirInUseError, workdir_lib.WorkdirLockLostError):
        # SIGTERM/SIGINT stops the whole sweep (the run's checkpoint is saved); recording
        # it as a failed variant would go on to train the next one after a preemption.
        # A run folder another process holds, or took from this one, is not a failed
        # variant either: writing error.txt there would write into another run's folder.
        raise
    except (CifarJaxError, Exception) as e:  # noqa: BLE001 - one failed variant must not stop the sweep
        message = f"{type(e).__name__}: {e}"
        os.makedirs(directory, exist_ok=True)
        with open(error_path, "w", encoding="utf-8") as f:
            f.write(message + "\n\n" + traceback.format_exc())
        print(f"  FAILED: {message}", flush=True)
        return {"status": "failed", "error": message}
    if os.path.exists(error_path):
        os.remove(error_path)  # an earlier attempt failed; this one succeeded
    return {"status": "done", "results": results}


def mean_std(values: list[float]) -> tuple[float, float]:
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, 0.0
    var = sum((v - mean) ** 2 for v in values) / (len(values) - 1)  # sample std
    return mean, math.sqrt(var)


def summarize(sweep: ml_collections.ConfigDict, outcomes: dict[str, list[dict]]) -> dict:
    """Mean ± std over seeds per variant (failed runs listed, not averaged)."""
    rows = []
    for variant, runs in outcomes.items():
        done = [r["results"] for r in runs if r["status"] == "done"]
        failed = [r["error"] for r in runs if r["status"] == "failed"]
        row: dict[str, Any] = {"variant": variant, "runs": len(done), "failed": failed}
        if done:
            for key in ("test_accuracy", "test_loss", "train_seconds"):
                row[f"{key}_mean"], row[f"{key}_std"] = mean_std([d[key] for d in done])
            row["test_accuracy_per_seed"] = [d["test_accuracy"] for d in done]
            if all("test_accuracy_tta" in d for d in done):  # config.tta, reported apart
                for key in ("test_accuracy_tta", "test_tta_seconds"):
                    row[f"{key}_mean"], row[f"{key}_std"] = mean_std([d[key] for d in done])
                row["test_accuracy_tta_per_seed"] = [d["test_accuracy_tta"] for d in done]
                row["tta"] = done[0]["config"]["tta"]
            row["trainable_params"] = done[0]["trainable_params"]
            row["epochs"] = done[0]["epochs"]
        rows.append(row)
    return {
        "name": sweep.name,
        "title": sweep.title,
        "base_config": sweep.base_config,
        "seeds": list(sweep.seeds),
        "budget": sweep.budget,
        "data_fraction": sweep.data_fraction,
        "reduced_budget": sweep.budget < 1 or sweep.data_fraction < 1,
        "rows": rows,
    }


def to_markdown(summary: dict) -> str:
    lines = [f"# {summary['title']}", ""]
    if summary["reduced_budget"]:
        lines += [
            f"**Reduced-budget run** (budget={summary['budget']} of each recipe's epochs, "
            f"data_fraction={summary['data_fraction']} of its training images): the numbers "
            "compare variants with each other, not with the reports.",
            "",
        ]
    machine = summary.get("machine")
    made_on = (
        f" Made on {machine['cpu']}, {machine['devices']}, jax {machine['jax']}, "
        f"commit {machine['commit']}."
        if machine
        else ""
    )
    lines += [
        f"Base config `{summary['base_config']}`, seeds {summary['seeds']}; "
        f"mean ± sample std over seeds.{made_on}",
        "",
        "| variant | test accuracy (%) | test loss | params | epochs | train time (s) | runs |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in summary["rows"]:
        if not row["runs"] and not row["failed"]:
            lines.append(f"| {row['variant']} | not run | | | | | 0 |")
            continue
        if not row["runs"]:
            lines.append(f"| {row['variant']} | FAILED: {row['failed'][0][:120]} | | | | | 0 |")
            continue
        failed = f" ({len(row['failed'])} failed)" if row["failed"] else ""
        lines.append(
            f"| {row['variant']} | {100 * row['test_accuracy_mean']:.2f} ± "
            f"{100 * row['test_accuracy_std']:.2f} | {row['test_loss_mean']:.4f} ± "
            f"{row['test_loss_std']:.4f} | {row['trainable_params']:,} | {row['epochs']:g} | "
            f"{row['train_seconds_mean']:.1f} | {row['runs']}{failed} |"
        )
    tta_rows = [r for r in summary["rows"] if "test_accuracy_tta_mean" in r]
    if tta_rows:
        lines += [
            "",
            "With the config's test-time augmentation (its own evaluation after training; "
            "time = train time + TTA evaluation, compile included):",
            "",
            "| variant | TTA | test accuracy with TTA (%) | per seed | train + TTA time (s) |",
            "|---|---|---|---|---|",
        ]
        for row in tta_rows:
            per_seed = ", ".join(f"{100 * a:.2f}" for a in row["test_accuracy_tta_per_seed"])
            seconds = row["train_seconds_mean"] + row["test_tta_seconds_mean"]
            lines.append(
                f"| {row['variant']} | {row['tta']} | {100 * row['test_accuracy_tta_mean']:.2f} "
                f"± {100 * row['test_accuracy_tta_std']:.2f} | {per_seed} | {seconds:.1f} |"
            )
    return "\n".join(lines) + "\n"


def plot(summary: dict, path: str) -> None:
    """Bars of mean test accuracy with ±1 std error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in summary["rows"] if r["runs"]]
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(rows) + 2), 4.5))
    names = [r["variant"] for r in rows]
    means = [100 * r["test_accuracy_mean"] for r in rows]
    stds = [100 * r["test_accuracy_std"] for r in rows]
    bars = ax.bar(
        names, means, yerr=stds, capsize=4, color="tab:blue", label="mean ± std over seeds"
    )
    ax.bar_label(bars, labels=[f"{m:.1f}" for m in means], padding=3, fontsize=8)
    ax.set_ylim(0, 1.25 * max([m + s for m, s in zip(means, stds, strict=True)] or [1]))
    ax.set_ylabel("test accuracy (%)")
    ax.set_xlabel("variant")
    title = summary["title"] + (" (reduced budget)" if summary["reduced_budget"] else "")
    ax.set_title(title, fontsize=10)
    ax.legend(loc="upper right")
    plt.setp(ax.get_xticklabels(), rotation=30, ha="right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plan_runs(sweep: ml_collections.ConfigDict) -> list[tuple[str, int, Any]]:
    """Every (variant, seed, config) of the sweep, in order; trial K is entry K. Built
    first, so a typo in one variant stops the sweep before any training."""
    if not sweep.variants:
        raise ConfigError("the sweep has no variants; add some to its `variants` dict.")
    if not sweep.seeds:
        raise ConfigError("the sweep has no seeds; set e.g. --config.seeds='(0,1,2)'.")
    return [
        (variant, seed, variant_config(sweep, variant, seed))
        for variant in sweep.variants
        for seed in sweep.seeds
    ]


def run_sweep(
    sweep: ml_collections.ConfigDict,
    workdir: str,
    trial: int | None = None,
    train_runs: bool = True,
    argv: list[str] | None = None,
) -> dict | None:
    """Runs (or finishes) every variant x seed and writes the summary files.

    ``trial=K`` trains trial K alone and writes no summary (a scheduler's job array runs
    the trials on many machines; each holds only its run's folder). ``train_runs=False``
    only collects the finished runs into the summary (``--summarize``). With
    ``sweep.parallel_trials`` > 1 the trials run as ``--trial=K`` processes of the
    sweep's own command line, ``argv`` (``sys.argv`` of the command).
    """
    workdir = workdir_lib.prepare(workdir)
    plan = plan_runs(sweep)
    n_parallel = parallel_trials(sweep)
    if trial is not None:
        if not 0 <= trial < len(plan):
            raise ConfigError(
                f"--trial={trial}: this sweep has trials 0..{len(plan) - 1} (`--list` prints them)."
            )
        variant, seed, config = plan[trial]
        directory = run_dir(workdir, variant, seed)
        print(f"[trial {trial} of {len(plan)}] {variant}, seed {seed} -> {directory}", flush=True)
        memory = [f"{k}={os.environ[k]}" for k in MEMORY_ENV if k in os.environ]
        if memory:  # what a parallel sweep gave this trial (JAX reads them at start)
            print(f"  device memory: {' '.join(memory)}", flush=True)
        outcome = run_one(config, directory)
        if outcome["status"] != "done":
            raise TrainingError(f"trial {trial} failed: {outcome['error']}")
        return None
    if train_runs and n_parallel > 1:
        if argv is None:
            raise ConfigError(
                "parallel_trials > 1 starts each trial as the sweep's own command with "
                "--trial=K, so run_sweep needs that command line: pass argv=sys.argv (as "
                "python -m cifar_jax sweep does), or set parallel_trials=1."
            )
        # No JAX in this process until the summary: it would take a GPU's memory.
        with workdir_lib.WorkdirLock(workdir, what="sweep") as lock:
            if lock.warning:
                print(lock.warning, flush=True)
            outcomes = run_parallel(sweep, workdir, plan, n_parallel, argv)
            summary = _write_summary(sweep, workdir, outcomes)
    else:
        from cifar_jax import train  # after the XLA flags are set

        outcomes = {v: [] for v in sweep.variants}
        with train.hold_workdir(workdir, what="sweep"):  # one sweep per workdir
            for i, (variant, seed, config) in enumerate(plan, 1):
                directory = run_dir(workdir, variant, seed)
                if train_runs:
                    print(f"[{i}/{len(plan)}] {variant}, seed {seed} -> {directory}", flush=True)
                    outcomes[variant].append(run_one(config, directory))
                else:
                    outcomes[variant].append(collect(directory))
            summary = _write_summary(sweep, workdir, outcomes)
    print(to_markdown(summary), flush=True)
    return summary


def _write_summary(
    sweep: ml_collections.ConfigDict, workdir: str, outcomes: dict[str, list[dict]]
) -> dict:
    """summary.json, summary.md and summary.png of the runs' outcomes (either path)."""
    summary = summarize(sweep, outcomes)
    summary["machine"] = runtime.machine_info()  # which CPU/GPU, jax and commit made it
    workdir_lib.write_json_atomic(os.path.join(workdir, "summary.json"), summary)
    with open(os.path.join(workdir, "summary.md"), "w", encoding="utf-8") as f:
        f.write(to_markdown(summary))
    plot(summary, os.path.join(workdir, "summary.png"))
    return summary


# Of a GPU's memory, the share the parallel trials split between them; the rest is left
# for each process's CUDA context and cuDNN/cuBLAS workspaces outside JAX's pool.
MEMORY_SHARE = 0.9
# JAX's device-memory settings (jaxlib's xla_client reads them when the backend starts).
# XLA_PYTHON_CLIENT_MEM_FRACTION is the deprecated name of XLA_CLIENT_MEM_FRACTION: jaxlib
# refuses both at once, so a fraction the user set under either name is kept.
MEMORY_ENV = (
    "XLA_CLIENT_MEM_FRACTION",
    "XLA_PYTHON_CLIENT_MEM_FRACTION",
    "XLA_PYTHON_CLIENT_PREALLOCATE",
    "XLA_PYTHON_CLIENT_ALLOCATOR",
)
TRIAL_LOG = "trial.log"
POLL_SECONDS = 0.2


def trial_env(concurrent: int, environ: Mapping[str, str]) -> tuple[dict[str, str], str]:
    """The environment of a parallel trial's process, and what it sets, for the log.

    Each of ``concurrent`` trials preallocates ``MEMORY_SHARE / concurrent`` of the GPU's
    memory (``XLA_CLIENT_MEM_FRACTION``), so together they fit where each alone would take
    75% of the card. Preallocation stays on: a trial's share is fixed and reserved when it
    starts (no fragmentation, no trial starved by another one later in the run), and a
    card too small for N shows at once. A fraction already in ``environ`` is kept.
    """
    env = dict(environ)
    env["PYTHONUNBUFFERED"] = "1"  # trial.log shows progress as it happens
    given = [k for k in MEMORY_ENV[:2] if environ.get(k)]
    if given:
        return env, f"{given[0]}={environ[given[0]]} from the environment, kept"
    env["XLA_CLIENT_MEM_FRACTION"] = f"{MEMORY_SHARE / concurrent:.3f}"
    return env, (
        f"each preallocates XLA_CLIENT_MEM_FRACTION={env['XLA_CLIENT_MEM_FRACTION']} "
        "of a GPU's memory"
    )


def trial_args(argv: list[str], k: int) -> list[str]:
    """The arguments of trial K's command: the sweep's own (``argv[1:]``, without
    ``--list``) and ``--trial=K``."""
    return [*(a for a in argv[1:] if a not in ("--list", "--nolist")), f"--trial={k}"]


def run_parallel(
    sweep: ml_collections.ConfigDict,
    workdir: str,
    plan: list[tuple[str, int, Any]],
    n: int,
    argv: list[str],
) -> dict[str, list[dict]]:
    """Trains the unfinished trials of ``plan``, up to ``n`` at once, each as
    ``python -m cifar_jax sweep <argv> --trial=K`` (its output in ``<run dir>/trial.log``),
    and returns every trial's outcome, as the sequential path does.

    SIGTERM / SIGINT: the running trials are sent SIGTERM (each saves a checkpoint, as a
    run does) and waited for, then :class:`preemption.Preempted` stops the sweep; a rerun
    resumes them and does not redo finished ones.
    """
    pending = []
    for k, (variant, seed, _) in enumerate(plan):
        if collect(run_dir(workdir, variant, seed))["status"] == "done":
            print(f"[{k + 1}/{len(plan)}] {variant}, seed {seed}: finished earlier", flush=True)
        else:
            pending.append(k)
    concurrent = max(1, min(n, len(pending)))
    env, memory = trial_env(concurrent, os.environ)
    print(
        f"parallel_trials={n}: {len(pending)} trial(s) to train, up to {concurrent} at "
        f"once, each in its own process ({TRIAL_LOG} in its folder); {memory}.",
        flush=True,
    )
    platform_name, why = runtime.run_platform()
    if platform_name == "cpu" and concurrent > 1:
        print(
            f"note: a CPU run ({why}): the {concurrent} trials share this machine's "
            f"{os.cpu_count()} cores, so each runs slower than alone, and together they "
            "rarely finish sooner than one after another. parallel_trials is meant for "
            "an accelerator that one small trial leaves idle.",
            flush=True,
        )
    running: dict[int, tuple[subprocess.Popen, IO[str], float]] = {}
    with preemption.StopRequest() as stop:
        try:
            while (pending or running) and not stop.requested():
                while pending and len(running) < n:
                    k = pending.pop(0)
                    running[k] = _start_trial(plan, workdir, k, argv, env)
                time.sleep(POLL_SECONDS)
                for k in [k for k, (proc, _, _) in running.items() if proc.poll() is not None]:
                    proc, log, started = running.pop(k)
                    log.close()
                    _report_trial(plan, workdir, k, proc.returncode, started)
            if stop.requested():
                for proc, _, _ in running.values():
                    proc.terminate()  # SIGTERM: the trial saves a checkpoint and exits
                for proc, _, _ in running.values():
                    proc.wait()
                raise preemption.Preempted(
                    f"stopped by {stop.name()}: {len(running)} running trial(s) were sent "
                    f"SIGTERM, saved a checkpoint and stopped (their {TRIAL_LOG} says where). "
                    "Rerun the same command to resume; finished trials are not redone.",
                    stop.signum,
                )
        finally:
            for proc, log, _ in running.values():  # a second Ctrl-C, or an error here
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
                log.close()
    outcomes: dict[str, list[dict]] = {v: [] for v in sweep.variants}
    for variant, seed, _ in plan:
        outcomes[variant].append(collect(run_dir(workdir, variant, seed)))
    return outcomes


def _start_trial(
    plan: list[tuple[str, int, Any]], workdir: str, k: int, argv: list[str], env: dict[str, str]
) -> tuple[subprocess.Popen, IO[str], float]:
    variant, seed, _ = plan[k]
    directory = run_dir(workdir, variant, seed)
    os.makedirs(directory, exist_ok=True)
    cmd = [sys.executable, "-m", "cifar_jax", "sweep", *trial_args(argv, k)]
    log = open(os.path.join(directory, TRIAL_LOG), "a", encoding="utf-8")  # noqa: SIM115
    stamp = datetime.datetime.now().isoformat(timespec="seconds")
    log.write(f"===== {stamp}: {shlex.join(cmd)}\n")
    log.flush()
    started = time.time()
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    print(
        f"[{k + 1}/{len(plan)}] {variant}, seed {seed} -> {directory} (trial {k}, pid {proc.pid})",
        flush=True,
    )
    return proc, log, started


def _report_trial(
    plan: list[tuple[str, int, Any]], workdir: str, k: int, returncode: int, started: float
) -> None:
    """One line on a finished trial; a trial that died without saying why (killed, out
    of memory) gets an ``error.txt`` naming its exit status and log, as a failed run has."""
    variant, seed, _ = plan[k]
    directory = run_dir(workdir, variant, seed)
    outcome = collect(directory)
    if outcome["status"] == "done":  # results.json written: the run finished
        accuracy = outcome["results"]["test_accuracy"]
        status = f" (then exit status {returncode})" if returncode else ""
        print(f"  trial {k} ({variant}, seed {seed}) done: test accuracy {accuracy:.4f}{status}",
              flush=True)  # fmt: skip
        return
    error_path = os.path.join(directory, "error.txt")
    if not (os.path.exists(error_path) and os.path.getmtime(error_path) >= started):
        how = f"killed by signal {-returncode}" if returncode < 0 else f"exit status {returncode}"
        message = (
            f"TrialError: the trial's process ended ({how}) without a result; its output is "
            f"in {os.path.join(directory, TRIAL_LOG)}"
        )
        with open(error_path, "w", encoding="utf-8") as f:
            f.write(message + "\n")
    error = collect(directory)["error"]
    print(f"  FAILED: trial {k} ({variant}, seed {seed}): {error}", flush=True)


def collect(directory: str) -> dict[str, Any]:
    """A run's outcome without training it: done, failed, or not run yet."""
    results_path = os.path.join(directory, "results.json")
    error_path = os.path.join(directory, "error.txt")
    if os.path.exists(results_path):
        with open(results_path, encoding="utf-8") as f:
            return {"status": "done", "results": json.load(f)}
    if os.path.exists(error_path):
        with open(error_path, encoding="utf-8") as f:
            return {"status": "failed", "error": f.readline().strip()}
    return {"status": "missing"}


def trial_commands(sweep: ml_collections.ConfigDict, argv: list[str]) -> list[str]:
    """One command per trial: this command line with ``--list`` replaced by ``--trial=K``."""
    return [
        shlex.join(["python", "-m", "cifar_jax", "sweep", *trial_args(argv, k)])
        for k in range(len(plan_runs(sweep)))
    ]
