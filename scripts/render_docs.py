"""Render every results table in README.md and docs/*.md from the committed records.

    python scripts/render_docs.py            # rewrite the tables between the markers
    python scripts/render_docs.py --check    # exit 1 naming each table that differs

A rendered table sits between ``<!-- render:NAME -->`` and ``<!-- /render:NAME -->`` in a
Markdown file; its body is replaced by what NAME's builder below makes from the records
(``results.json`` of committed runs, ``bench.json``, the reproduce command's records), so
a number typed by hand or left stale fails ``--check`` (``.ci/run`` runs it). Every table
says where it came from: the records' folder, the command that makes them, their
commits and machines.

The records are checked first, and a bad one stops both modes, naming it: every JSON
record under docs/ must name its commit (a ``-dirty`` one needs a ``commit_note`` saying
why) and its machine; every run's results.json also its CPU and its precision
(``config.half_precision``; a run from before that option, a ``precision`` with a
``precision_note``).

Nothing here reads the data set or describes the machine it runs on: the same records
give the same tables anywhere (the parameter counts of results not yet run are counted by
building their models, which takes JAX ~20 s).
"""

from __future__ import annotations

import argparse
import difflib
import glob
import json
import os
import re
import statistics
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DOC_FILES = ["README.md", "docs/*.md"]
MARKER = re.compile(
    r"(?P<open><!-- render:(?P<name>[\w-]+) -->\n)(?P<body>.*?)"
    r"(?P<close><!-- /render:(?P=name) -->)",
    re.S,
)
FAST_RUNS = "docs/fast/runs"
REPRO_RUNS = "docs/reproduction/runs"
REPRO_FIRST20 = "docs/reproduction/first20"
REPRO_ESTIMATES = "docs/reproduction/estimates.json"
REPRO_MINI = "docs/reproduction/cifar100_mini.json"
READINGS = "docs/reproduction/runs/report000_readings"
READINGS_001 = "docs/reproduction/runs/report001_readings"
BENCH = "docs/bench/bench.json"

# CPU labels: the records name family and model numbers; these name the part's class
# (what the KVM guests report does not say). Descriptive, not a measurement.
CPU_CLASS = {
    ("6", "167"): "Granite Rapids class",
    ("6", "207"): "Emerald Rapids class",
    ("26", ""): "Zen 5",
    ("25", ""): "Zen 3",
}


class RecordError(Exception):
    """A committed record that cannot back a table (no commit, CPU or precision)."""


# ---------------------------------------------------------------------------------------
# Records


def _rel(path: str | Path) -> str:
    return os.path.relpath(path, ROOT)


def load_json(path: str | Path) -> Any:
    with open(ROOT / path, encoding="utf-8") as f:
        return json.load(f)


def check_run(path: str, r: dict[str, Any]) -> list[str]:
    """What a run's results.json lacks to back a number in the docs."""
    problems = []
    commit = r.get("commit")
    if not commit or commit == "unknown":
        problems.append(f"{path}: no commit recorded (commit={commit!r})")
    elif commit.endswith("-dirty") and not r.get("commit_note"):
        problems.append(
            f"{path}: commit {commit} has uncommitted changes and no commit_note saying why"
        )
    if not r.get("cpu") and r.get("device_kind", "cpu") == "cpu":
        problems.append(f"{path}: no cpu recorded")
    if not isinstance((r.get("config") or {}).get("half_precision"), bool) and not (
        r.get("precision") and r.get("precision_note")
    ):
        problems.append(f"{path}: no config.half_precision and no precision with a precision_note")
    return problems


def run_records(folder: str) -> list[tuple[str, dict[str, Any]]]:
    """Every results.json under folder (sorted), checked."""
    out, problems = [], []
    for path in sorted(glob.glob(str(ROOT / folder / "**" / "results.json"), recursive=True)):
        r = load_json(path)
        problems += check_run(_rel(path), r)
        out.append((_rel(path), r))
    if problems:
        raise RecordError("\n".join(problems))
    return out


def cpu_label(cpu: str | None) -> str:
    """``Xeon, family 6 model 167 (Granite Rapids class), AVX-512`` from the record's
    ``cpu`` string, with any ISA limit the run was held to."""
    if not cpu:
        return "not recorded"
    m = re.match(
        r"(?P<name>.*?) \(family (?P<f>\d+)(?:, model (?P<m>\d+))?, (?P<isa>\w+)"
        r"(?P<amx>, AMX)?\)(?P<rest>.*)",
        cpu,
    )
    if not m:
        return cpu
    name = m["name"].replace("Intel(R) Xeon(R) Processor", "Intel Xeon")
    cls = CPU_CLASS.get((m["f"], m["m"] or "")) or CPU_CLASS.get((m["f"], ""))
    isa = {"AVX512": "AVX-512", "AVX2": "AVX2"}.get(m["isa"], m["isa"])
    model = f" model {m['m']}" if m["m"] else ""
    label = f"{name}, family {m['f']}{model}{f' ({cls})' if cls else ''}, {isa}"
    if m["amx"]:
        label += " with AMX"
    limits = m["rest"].removeprefix(", kernels limited by ").strip()
    return f"{label}, held to {limits}" if limits else label


def short(commit: str) -> str:
    base, dirty = commit.removesuffix("-dirty"), commit.endswith("-dirty")
    return base[:7] + ("-dirty" if dirty else "")


def _commits(records: Iterable[dict[str, Any]]) -> str:
    return ", ".join(sorted({short(r["commit"]) for r in records}))


def _cpus(records: Iterable[dict[str, Any]]) -> str:
    return "; ".join(sorted({cpu_label(r.get("cpu")) for r in records}))


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f}"


def precision(r: dict[str, Any]) -> str:
    c = r["config"]
    if "half_precision" not in c:
        return r["precision"]
    if not c["half_precision"]:
        return "float32"
    return "bf16, bf16 kernel grads" if c.get("cpu_bf16_kernel_grads") else "bf16"


def to_tta_seconds(r: dict[str, Any]) -> float:
    """First training step to the TTA number: the training loop, the plain test pass and
    the TTA pass (start-up, data load, model init, compile and checkpoint saves apart)."""
    return r["train_seconds"] + r.get("test_seconds", 0.0) + r.get("test_tta_seconds", 0.0)


# ---------------------------------------------------------------------------------------
# Tables


def _source(folder: str, records: list[dict[str, Any]], command: str) -> str:
    return (
        f"Records: `{folder}/` ({len(records)} runs' `results.json`); commits "
        f"{_commits(records)}; made by `{command}`."
    )


def _fast_groups() -> list[tuple[str, list[dict[str, Any]]]]:
    groups: dict[str, list[dict[str, Any]]] = {}
    for path, r in run_records(FAST_RUNS):
        group = Path(path).relative_to(FAST_RUNS).parts[0]
        groups.setdefault(group, []).append(r)

    def key(item: tuple[str, list[dict[str, Any]]]) -> tuple:
        name, rs = item
        return (rs[0]["config"]["model"], precision(rs[0]), round(rs[0]["epochs"], 1), name)

    return sorted(groups.items(), key=key)


def _fast_row(name: str, rs: list[dict[str, Any]], link: str) -> str:
    acc = [100 * r["test_accuracy_tta"] for r in rs]
    mean, std = _mean_std(acc)
    t = [to_tta_seconds(r) for r in rs]
    walls = [r["time"]["wall_seconds"] for r in rs if (r.get("time") or {}).get("wall_seconds")]
    wall = (
        f"{_minutes(statistics.fmean(walls))} ({_minutes(min(walls))}-{_minutes(max(walls))})"
        if len(walls) == len(rs)
        else "not recorded"
    )
    seeds = ",".join(str(r["seed"]) for r in sorted(rs, key=lambda r: r["seed"]))
    epochs = sorted({f"{r['epochs']:.3g}" for r in rs})
    return (
        f"| [{name}]({link}/{name}) | `{rs[0]['config']['model']}` | {precision(rs[0])} "
        f"| {'/'.join(epochs)} | {len(rs)} ({seeds}) | {mean:.2f} ± {std:.2f} "
        f"| {min(acc):.2f} | {_minutes(statistics.fmean(t))} "
        f"({_minutes(min(t))}-{_minutes(max(t))}) | {wall} | {_cpus(rs)} | {_commits(rs)} |"
    )


_FAST_HEAD = [
    "| runs | recipe | precision | epochs | seeds | TTA accuracy % (mean ± std) | lowest "
    "| training + test + TTA, min (mean, range) | wall time, min (mean, range) | CPU (2 cores) "
    "| commit |",
    "|---|---|---|---:|---|---:|---:|---:|---:|---|---|",
]

_FAST_LEGEND = (
    "Each row is one folder of runs, each run made by `python -m cifar_jax.main "
    "--config=configs/<recipe>.py` with the overrides in its `results.json` `config`. "
    "Accuracy: CIFAR-10 test set with the recipe's TTA, at the end of the fixed budget "
    "(airbench's protocol: no early stop at a target). *Training + test + TTA*: from the "
    "first training step to the TTA number (`train_seconds + test_seconds + "
    "test_tta_seconds`), which leaves out start-up, data load, model init, compile and "
    "checkpoint saves. *Wall time*: `time.wall_seconds`, from process start to "
    "`results.json` written, everything included (a run trained after another in one "
    "process, as a sweep trains them, counts from its own start: `time.origin`); recorded "
    "by runs from commit 37e6823 on."
)


def table_airbench_runs() -> str:
    groups = _fast_groups()
    records = [r for _, rs in groups for r in rs]
    lines = [_FAST_LEGEND, "", *_FAST_HEAD]
    lines += [_fast_row(name, rs, "fast/runs") for name, rs in groups]
    lines += ["", _source(FAST_RUNS, records, "python -m cifar_jax.main")]
    return "\n".join(lines)


# The phases of a run's ``time`` record (train.PhaseClock), in the order they happen.
_PHASES = (
    ("startup_seconds", "start-up"),
    ("data_seconds", "data"),
    ("init_seconds", "init"),
    ("compile_seconds", "compile"),
    ("training_seconds", "training"),
    ("checkpoint_seconds", "of which checkpoint saves"),
    ("test_seconds", "test"),
    ("tta_seconds", "TTA"),
    ("other_seconds", "other"),
)


def table_fast_time_split() -> str:
    """Where the wall time of each run group goes, from the runs' ``time`` records (groups
    whose every run has one): mean seconds per phase, and each phase's share of the
    wall time."""
    head = " | ".join(label for _, label in _PHASES)
    lines = [
        f"| runs | precision | seeds | wall, min | {head} | CPU (2 cores) | commit |",
        "|---|---|---:|---:|" + "---:|" * len(_PHASES) + "---|---|",
    ]
    timed = [(name, rs) for name, rs in _fast_groups() if all((r.get("time") or {}) for r in rs)]
    for name, rs in timed:
        wall = statistics.fmean(r["time"]["wall_seconds"] for r in rs)
        cells = []
        for key, _ in _PHASES:
            mean = statistics.fmean(r["time"][key] for r in rs)
            cells.append(f"{mean:.0f} s ({100 * mean / wall:.0f}%)")
        lines.append(
            f"| [{name}](fast/runs/{name}) | {precision(rs[0])} | {len(rs)} "
            f"| {_minutes(wall)} | {' | '.join(cells)} | {_cpus(rs)} | {_commits(rs)} |"
        )
    records = [r for _, rs in timed for r in rs]
    lines += [
        "",
        "Mean seconds per run (share of the wall time), from each run's `time` record "
        "(`results.json`), which runs record from commit 37e6823 on: *wall* from process "
        "start (`time.origin`) to `results.json` written; *start-up*: interpreter, "
        "imports, flags, config and workdir lock; *data*: reading and checking the files; "
        "*init*: model, optimizer and state (the whitening init included); *compile*: the "
        "train step, ahead of time; *training*: the loop (steps, validation and checkpoint "
        "saves, the saves also given apart); *test* and *TTA*: the final evaluations, each "
        "compiling its own step; *other*: what no phase names. "
        f"{_source(FAST_RUNS, records, 'python -m cifar_jax.main')}",
    ]
    return "\n".join(lines)


def table_readme_headline() -> str:
    """Time to 94%: the airbench groups of 3+ seeds whose mean TTA accuracy is 94% or
    more, fastest first; the seed reports reproduced; speed against PyTorch."""
    lines = [
        "**Time to 94% on 2 CPU cores** (CIFAR-10 test accuracy with TTA, at the end of "
        "each recipe's fixed budget; every folder of 3+ seeds whose mean is 94% or more, "
        "fastest first; all runs in [docs/fast.md](docs/fast.md)):",
        "",
        *_FAST_HEAD,
    ]
    good = [
        (name, rs)
        for name, rs in _fast_groups()
        if len(rs) >= 3 and statistics.fmean(100 * r["test_accuracy_tta"] for r in rs) >= 94.0
    ]
    good.sort(key=lambda g: statistics.fmean(to_tta_seconds(r) for r in g[1]))
    lines += [_fast_row(name, rs, "docs/fast/runs") for name, rs in good]
    lines += ["", _FAST_LEGEND.replace("Each row is one folder", "A row is a folder"), ""]

    rows = reproduction_rows()
    done = [r for r in rows if r["runs"]]
    lines += [
        f"**The seed reports, reproduced** ({len(done)} of {len(rows)} reported results run "
        "here; each recipe exactly as its report gives it; the rest, their commands and "
        "estimated times are in [docs/reproduction.md](docs/reproduction.md)):",
        "",
        "| result | model | reported % | ours % (mean ± std, seeds) | difference |",
        "|---|---|---:|---:|---:|",
    ]
    for r in done:
        lines.append(
            f"| {r['id']} | `{r['model']}` | {_reported(r)} | {r['mean']:.2f} ± {r['std']:.2f} "
            f"({r['runs']}) | {r['difference']:+.2f} |"
        )
    lines += [""]
    lines += bench_summary_lines(link="docs/performance.md")
    return "\n".join(lines)


def _reported(row: dict[str, Any]) -> str:
    r = row["reported"]
    return f"{r[0]:g}-{r[1]:g}" if isinstance(r, list) else f"{r:.2f}"


# --- reproduction ------------------------------------------------------------------------

_REPRO_CACHE: list[dict[str, Any]] = []


def reproduction_rows() -> list[dict[str, Any]]:
    """The reproduce command's rows over the committed runs: report 003 from its own
    data's folder, every other result from the CIFAR-10 folder (the runs' results.json
    are read and checked against each recipe, as `reproduce --summarize` does)."""
    if _REPRO_CACHE:
        return _REPRO_CACHE
    from cifar_jax.studies import reproduction as reproduce

    run_records(REPRO_RUNS)  # checks every record
    run_records(REPRO_FIRST20)
    estimates = load_json(REPRO_ESTIMATES)
    # One plan per folder, as the command makes them: results with the same recipe share
    # their runs (001_loss_cross_entropy is 001_cnn_baseline's).
    cifar100 = [r for r in reproduce.RESULTS if r.report == "003"]
    cifar10 = [r for r in reproduce.RESULTS if r.report != "003"]
    runs = reproduce.plan(cifar10, 3, str(ROOT / REPRO_RUNS)) + reproduce.plan(
        cifar100, 3, str(ROOT / REPRO_FIRST20)
    )
    order = {r.id: i for i, r in enumerate(reproduce.RESULTS)}
    runs.sort(key=lambda run: order[run.result.id])  # stable: seeds stay in order
    rows = reproduce.summary_rows(runs, False, estimates, 3, "runs/reproduce")
    for row in rows:
        if row["id"].startswith("003_") and not row["runs"]:
            row["command"] += " --data_dir=../shared/data/cifar100-first20"
    _REPRO_CACHE.extend(rows)
    return _REPRO_CACHE


def table_reproduction() -> str:
    from cifar_jax.studies import reproduction as reproduce

    rows = reproduction_rows()
    done = [r for r in rows if r["runs"]]
    cpus = sorted({cpu_label(c) for r in done for c in r["cpu"]})
    commits = sorted({short(c) for r in done for c in r["commit"]})
    return "\n".join(
        [
            "Accuracy in %, mean ± sample std over seeds (n). *Time per run*: compile and "
            "training loop of one run (`train_seconds + compile_seconds`), on cores shared "
            "with other work unless the note says otherwise.",
            "",
            *reproduce.table_lines(rows),
            "",
            f"Records: `{REPRO_RUNS}/<result>/seed_<n>/results.json` (CIFAR-10) and "
            f"`{REPRO_FIRST20}/` (report 003, CIFAR-100 classes 0-19), "
            f"{sum(r['runs'] for r in done)} runs; estimates: `{REPRO_ESTIMATES}`. "
            f"Commits {', '.join(commits)}. CPUs (2 cores): {'; '.join(cpus)}. Made by "
            "`python -m cifar_jax reproduce` (`--estimate` for the estimates).",
        ]
    )


def table_reproduction_mini() -> str:
    from cifar_jax.studies import reproduction as reproduce

    summary = load_json(REPRO_MINI)
    rows = summary["rows"]
    done = [r for r in rows if r["runs"]]
    commits = sorted({short(c) for r in done for c in r["commit"]})
    cpus = sorted({cpu_label(c) for r in done for c in r["cpu"]})
    return "\n".join(
        [
            *reproduce.table_lines(rows),
            "",
            f"Record: `{REPRO_MINI}` (the command's `reproduction.json` for the mini "
            f"subset's workdir; the runs are in `{REPRO_RUNS}/<result>__scaled_to_1600/`). "
            f"Commits {', '.join(commits)}. CPUs (2 cores): {'; '.join(cpus)}.",
        ]
    )


def table_report000_readings() -> str:
    records = run_records(READINGS)
    lines = [
        "| variant | test accuracy % | test loss | params | epochs | train time (s) | CPU "
        "| commit |",
        "|---|---:|---:|---:|---:|---:|---|---|",
    ]
    for path, r in records:
        variant = Path(path).relative_to(READINGS).parts[0]
        lines.append(
            f"| {variant} | {100 * r['test_accuracy']:.2f} | {r['test_loss']:.4f} "
            f"| {r['trainable_params']:,} | {r['epochs']:g} | {r['train_seconds']:.1f} "
            f"| {cpu_label(r.get('cpu'))} | {short(r['commit'])} |"
        )
    lines += [
        "",
        f"Records: `{READINGS}/<variant>/seed_0/results.json` (seed 0 each); made by "
        "`python -m cifar_jax sweep --config=configs/sweeps/report000_readings.py`.",
    ]
    return "\n".join(lines)


# Report 001's CPU-sized rows (sections 2 and 4) and the coefficient readings of
# configs/sweeps/report001_readings.py, whose variants read these rows' numbers.
_ROWS_001 = (
    "001_cnn_baseline",
    "001_augmentation",
    "001_lr_schedule",
    "001_loss_focal",
    "001_loss_cross_entropy_smooth",
    "001_loss_cross_entropy_l2",
)
_READS_001 = {
    "l2_": "001_loss_cross_entropy_l2",
    "smoothing_": "001_loss_cross_entropy_smooth",
    "lr_": "001_lr_schedule",
}
# Config fields a record's change from the baseline CNN is not read from.
_NOT_A_CHANGE = {"seed", "data_dir", "model"}


def _change_from(base: dict[str, Any], config: dict[str, Any]) -> str:
    """The fields where a run's recorded config differs from the baseline CNN's recipe."""
    diff = []
    for key in sorted(config):
        if key in _NOT_A_CHANGE or key not in base:
            continue
        a, b = base[key], config[key]
        if (list(a) if isinstance(a, tuple) else a) != b:
            diff.append(f"{key}={b}")
    return ", ".join(diff) or "none (the baseline)"


def _end_of_run(folder: Path) -> tuple[float, float, float | None] | None:
    """(training accuracy % of the last epoch, dropout on, mean of its logged steps; the
    learning rate at the last logged step; the last validation accuracy %, None without
    a split) from a run's metrics.jsonl, or None without one."""
    if not (folder / "metrics.jsonl").exists():
        return None
    rows = _read_jsonl(folder / "metrics.jsonl")
    train = [m for m in rows if m.get("split") == "train"]
    val = [m for m in rows if m.get("split") == "val"]
    last = train[-1]["epoch"]
    epoch = [m for m in train if last - 1 < m["epoch"] <= last]
    return (
        100 * statistics.fmean(m["accuracy"] for m in epoch),
        train[-1]["learning_rate"],
        100 * val[-1]["accuracy"] if val else None,
    )


def table_report001_readings() -> str:
    """Report 001's CPU-sized rows seed by seed, with what each run's metrics.jsonl says of
    its end (training accuracy, learning rate), beside the coefficient readings."""
    from cifar_jax import config as config_lib
    from cifar_jax.studies import reproduction as reproduce

    base = config_lib.load_config_file("configs/cnn_baseline.py").to_dict()  # the code's
    reported = {r.id: r.reported for r in reproduce.RESULTS}
    groups = [(f"{REPRO_RUNS}/{row}", row, reported[row]) for row in _ROWS_001]
    for variant in sorted({Path(p).relative_to(READINGS_001).parts[0] for p, _ in
                           run_records(READINGS_001)}):  # fmt: skip
        row = next(r for prefix, r in _READS_001.items() if variant.startswith(prefix))
        groups.append((f"{READINGS_001}/{variant}", f"reading of {row}", reported[row]))
    lines = [
        "| runs | change from the baseline CNN's recipe | reported % | test accuracy % by seed "
        "| mean ± std | validation accuracy % by seed: best / last epoch "
        "| last epoch: training accuracy % | last learning rate |",
        "|---|---|---:|---|---:|---|---:|---:|",
    ]
    records = []
    for folder, what, report in groups:
        runs = sorted(run_records(folder), key=lambda pr: pr[1]["seed"])
        records += [r for _, r in runs]
        acc = [100 * r["test_accuracy"] for _, r in runs]
        mean, std = _mean_std(acc)
        end_of = {p: _end_of_run(ROOT / Path(p).parent) for p, _ in runs}  # read once
        ends = [e for e in end_of.values() if e]
        by_seed = ", ".join(f"{a:.2f} ({r['seed']})" for a, (_, r) in zip(acc, runs, strict=True))
        train = (
            f"{statistics.fmean(e[0] for e in ends):.1f} ({len(ends)} of {len(runs)} runs)"
            if ends
            else "not logged"
        )
        lrs = sorted({f"{e[1]:g}" for e in ends})
        val = ", ".join(
            f"{100 * r['best_val_accuracy']:.2f} / "
            + (f"{end_of[p][2]:.2f}" if end_of[p] else "not logged")
            for p, r in runs
            if r.get("best_val_accuracy") is not None
        )
        lines.append(
            f"| [{Path(folder).name}]({Path(folder).relative_to('docs')})"
            f"{f' ({what})' if what != Path(folder).name else ''} "
            f"| {_change_from(base, runs[0][1]['config'])} | {report:.2f} | {by_seed} "
            f"| {mean:.2f} ± {std:.2f} | {val or 'no validation split'} | {train} "
            f"| {', '.join(lrs) or 'not logged'} |"
        )
    lines += [
        "",
        "Test accuracy of each run (seed in brackets; the model of the last step is "
        "tested); validation accuracy, for the rows with a held-out split: the best epoch's "
        "(`results.json`) and the last epoch's; *last epoch*: the mean training "
        "accuracy of the last epoch's logged steps (dropout on) and the learning rate at "
        "the last step, from the runs' `metrics.jsonl` (the runs made before it was "
        "committed have `results.json` only). The change is read from each run's recorded "
        f"config against `configs/cnn_baseline.py`. Records: `{REPRO_RUNS}/<result>/` and "
        f"`{READINGS_001}/<variant>/` (`python -m cifar_jax sweep "
        "--config=configs/sweeps/report001_readings.py`); commits "
        f"{_commits(records)}; CPUs: {_cpus(records)}.",
    ]
    return "\n".join(lines)


# Report 003's Table 4 test losses (the report's own figures, beside its accuracies,
# which reproduce.RESULTS holds): what a reading of the report's numbers must also match.
REPORT003_TEST_LOSS = {
    "003_baseline": 1.8410,
    "003_dropout": 1.5841,
    "003_batchnorm": 1.7590,
    "003_both": 1.4328,
    "003_both_aug": 1.3916,
}


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def table_report003_readings() -> str:
    """Where our report-003 runs meet the report's numbers: the restored best model (the
    recipe), the model of the last epoch trained (`evaluate --checkpoint=latest`), and
    the first epoch at which our validation accuracy / loss reach the report's test
    accuracy / loss."""
    from cifar_jax.studies import reproduction as reproduce

    reported = {r.id: r.reported for r in reproduce.RESULTS}
    records = run_records(REPRO_FIRST20)
    lines = [
        "| result | reported acc % / loss | ours, restored best (the recipe) | ours, last "
        "epoch's model | epochs trained | best epoch | first epoch val acc >= reported "
        "| first epoch val loss <= reported |",
        "|---|---|---|---|---|---|---|---|",
    ]
    by_result: dict[str, list[tuple[Path, dict[str, Any]]]] = {}
    for path, r in records:
        by_result.setdefault(Path(path).relative_to(REPRO_FIRST20).parts[0], []).append(
            (ROOT / path, r)
        )
    for result, runs in sorted(by_result.items(), key=lambda kv: list(reported).index(kv[0])):
        acc, loss = reported[result], REPORT003_TEST_LOSS[result]
        best_acc = [100 * r["test_accuracy"] for _, r in runs]
        best_loss = [r["test_loss"] for _, r in runs]
        last, epochs, best_ep, reach_acc, reach_loss = [], [], [], [], []
        for path, r in runs:
            folder = path.parent
            latest = folder / "eval_latest.json"
            if latest.exists():
                e = load_json(latest)
                last.append((100 * e["accuracy"], e["loss"]))
            val = [m for m in _read_jsonl(folder / "metrics.jsonl") if m.get("split") == "val"]
            epochs.append(f"{r['epochs']:g}")
            steps_per_epoch = val[0]["step"] / val[0]["epoch"]
            best_ep.append(f"{r['best_step'] / steps_per_epoch:g}")
            reach_acc.append(
                next((f"{m['epoch']:g}" for m in val if 100 * m["accuracy"] >= acc), "never")
            )
            reach_loss.append(next((f"{m['epoch']:g}" for m in val if m["loss"] <= loss), "never"))
        a_mean, a_std = _mean_std(best_acc)
        last_cell = "not evaluated"
        if len(last) == len(runs):
            la, ls = _mean_std([a for a, _ in last]), statistics.fmean(x for _, x in last)
            last_cell = f"{la[0]:.2f} ± {la[1]:.2f} / {ls:.3f}"
        lines.append(
            f"| {result} | {acc:.2f} / {loss:.4f} | {a_mean:.2f} ± {a_std:.2f} / "
            f"{statistics.fmean(best_loss):.3f} | {last_cell} | {', '.join(epochs)} "
            f"| {', '.join(best_ep)} | {', '.join(reach_acc)} | {', '.join(reach_loss)} |"
        )
    commits = _commits(r for _, r in records)
    lines += [
        "",
        f"Records: `{REPRO_FIRST20}/<result>/seed_<n>/`: `results.json` (the recipe's test of "
        "the restored best model), `metrics.jsonl` (validation after every epoch) and "
        "`eval_latest.json` (`python -m cifar_jax evaluate --checkpoint=latest`: the model "
        f"of the last epoch trained); {len(records)} runs, seeds 42-44 (per-seed cells in "
        f"that order), commits {commits}. Report: Table 4's test accuracy and loss.",
    ]
    return "\n".join(lines)


# Report 003's figures for the end of its runs (the report's own, section 4.3 / Table 1 and
# section 6.4): final training / validation accuracy (%) and loss, and the epoch it stopped.
REPORT003_FINAL = {
    "003_baseline": {"train_acc": 87.66, "val_acc": 54.10, "train_loss": 0.4213,
                     "val_loss": 1.9478, "stopped": 16},
    "003_both": {"gap": 1.31},
    "003_both_aug": {"train_acc": 42.15, "gap": -14.20},
}  # fmt: skip


def _last_epoch(folder: Path) -> dict[str, float]:
    """Our run's last epoch: training accuracy / loss (mean of that epoch's logged
    points, dropout on) and validation accuracy / loss."""
    rows = _read_jsonl(folder / "metrics.jsonl")
    val = [m for m in rows if m.get("split") == "val"][-1]
    last = val["epoch"]
    train = [m for m in rows if m.get("split") == "train" and last - 1 < m["epoch"] <= last]
    return {
        "epoch": val["epoch"],
        "train_acc": 100 * statistics.fmean(m["accuracy"] for m in train),
        "train_loss": statistics.fmean(m["loss"] for m in train),
        "val_acc": 100 * val["accuracy"],
        "val_loss": val["loss"],
    }


def table_report003_final() -> str:
    """The report's end-of-run training figures beside our runs' last epoch."""
    records = run_records(REPRO_FIRST20)
    lines = [
        "| result | | stopped at epoch | train acc % | val acc % | train - val | train loss "
        "| val loss |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for result, fig in REPORT003_FINAL.items():
        rep_gap = fig.get("gap", fig.get("train_acc", 0) - fig.get("val_acc", 0))

        def cell(key: str, fmt: str = "{:.2f}", fig: dict = fig) -> str:
            return fmt.format(fig[key]) if key in fig else "-"

        lines.append(
            f"| {result} | report | {cell('stopped', '{:d}')} | {cell('train_acc')} "
            f"| {cell('val_acc')} | {rep_gap:+.2f} | {cell('train_loss', '{:.4f}')} "
            f"| {cell('val_loss', '{:.4f}')} |"
        )
        ours = [
            _last_epoch((ROOT / path).parent)
            for path, _ in records
            if Path(path).relative_to(REPRO_FIRST20).parts[0] == result
        ]
        mean = {k: statistics.fmean(o[k] for o in ours) for k in ours[0]}
        stopped = ", ".join(f"{o['epoch']:g}" for o in ours)
        lines.append(
            f"| | ours (mean of {len(ours)}) | {stopped} "
            f"| {mean['train_acc']:.2f} | {mean['val_acc']:.2f} "
            f"| {mean['train_acc'] - mean['val_acc']:+.2f} | {mean['train_loss']:.4f} "
            f"| {mean['val_loss']:.4f} |"
        )
    lines += [
        "",
        "Ours: the last epoch of each run (`metrics.jsonl`): training accuracy and loss are "
        "the mean of that epoch's logged steps (dropout on, as the report's training "
        "figures are), validation after it. Report: section 4.3 and Table 1 (baseline), "
        "section 6.4 (the train-validation gaps, both + augmentation's training accuracy).",
    ]
    return "\n".join(lines)


# --- bench -------------------------------------------------------------------------------


def _bench() -> dict[str, Any]:
    return _record(BENCH)


def bench_summary_lines(link: str) -> list[str]:
    from cifar_jax.perf import bench

    report = _bench()
    rows = report["results"]
    train = [r["train"]["ratio"] for r in rows if r["train"]["ratio"] is not None]
    evals = [r["eval"]["ratio"] for r in rows if r["eval"]["ratio"] is not None]
    met = sum(1 for r in rows if not bench.missed_targets(r))
    m = report["machine"]
    return [
        f"**Speed against PyTorch on the same cores** (`python -m cifar_jax bench`: the real "
        f"train and eval steps of {len(rows)} model x batch rows beside a PyTorch eager "
        "twin in one process; jax / torch images per second, median of interleaved rounds; "
        f"table and levers in [docs/performance.md]({link})):",
        "",
        "| train step ratio, median (range) | eval step ratio, median (range) "
        "| rows meeting every target | CPU (2 cores) | commit | date |",
        "|---:|---:|---:|---|---|---|",
        f"| {statistics.median(train):.2f} ({min(train):.2f}-{max(train):.2f}) "
        f"| {statistics.median(evals):.2f} ({min(evals):.2f}-{max(evals):.2f}) "
        f"| {met} of {len(rows)} | {cpu_label(m['cpu'])} | {short(m['commit'])} "
        f"| {report['started'][:10]} |",
    ]


def table_bench() -> str:
    from cifar_jax.perf import bench

    report = _bench()
    return "\n".join(
        [
            bench.markdown(report).rstrip("\n"),
            "",
            f"Record: `{BENCH}` (commit {short(report['machine']['commit'])}"
            + (
                f"; {report['machine']['commit_note']}"
                if report["machine"].get("commit_note")
                else ""
            )
            + ").",
        ]
    )


# --- GPU check records ----------------------------------------------------------------

GPU_GATE = "docs/records/gpu_gate.json"
SUITE_NO_ONEDNN = "docs/records/suite_without_onednn.json"
SUITE_DURATIONS = "docs/records/suite_durations.json"
PY312_CHECK = "docs/records/py312_check/summary.json"


def _record(path: str) -> dict[str, Any]:
    """A record a table reads; its commit and machine were checked by audit_records,
    which runs over every record under docs/ before any table is built."""
    if not (ROOT / path).exists():
        raise RecordError(f"{path}: no such record (the doc names the command that makes it)")
    return load_json(path)


def table_gpu_gate() -> str:
    g = _record(GPU_GATE)
    runs = g["runs"]
    return "\n".join(
        [
            "| seed | " + " | ".join(str(r["seed"]) for r in runs) + " |",
            "|---|" + "---:|" * len(runs),
            "| test accuracy | " + " | ".join(f"{r['test_accuracy']:.4f}" for r in runs) + " |",
            "",
            f"Mean {g['mean']:.4f}, sample std {g['std']:.4f}, range {g['min']:.4f}-"
            f"{g['max']:.4f}; the gate ({g['gate']}) is {g['min'] - g['gate']:.3f} under the "
            f"lowest seed ({(g['min'] - g['gate']) / g['std']:.0f} standard deviations). "
            f"`{g['model']}` with `{' '.join(g['arguments'])}` on {g['data']}; "
            f"{cpu_label(g['cpu'])}, 2 cores; commit {short(g['commit'])}, {g['made'][:10]}; "
            f"convolutions: {runs[0]['convolutions']}. Record: `{GPU_GATE}`, made by "
            f"`{g['command']}`.",
        ]
    )


def table_suite_durations() -> str:
    """Where the suite's time goes, as CI runs it: the files over a minute, the slowest
    tests, and the load on the machine while it ran."""
    s = _record(SUITE_DURATIONS)
    total = s["seconds"]
    lines = [
        "| test file | minutes | share |",
        "|---|---:|---:|",
        *(
            f"| `{name}` | {sec / 60:.1f} | {100 * sec / total:.0f}% |"
            for name, sec in s["seconds_by_file"].items()
            if sec >= 60
        ),
        f"| all {s['tests']} tests | {total / 60:.1f} | 100% |",
        "",
        "Slowest tests: "
        + "; ".join(
            f"`{name.split('.')[-1]}` {sec / 60:.1f} min" for name, sec in s["slowest_tests"][:8]
        )  # fmt: skip
        + f". {s['passed']} passed, {s['skipped']} skipped, {len(s['failed'])} failed; "
        f"started {s['started_utc']}, commit {short(s['commit'])}, {cpu_label(s['cpu'])}, "
        f"2 cores, Python {s['python']}, jax {s['jax']}; load average {s['loadavg_before']} "
        f"before, {s['loadavg_after']} after (1-minute averages on 2 cores; above 2, "
        "something shared them)" + f". Record: `{SUITE_DURATIONS}` (`{s['what']}`).",
    ]
    return "\n".join(lines)


def table_suite_without_onednn() -> str:
    s = _record(SUITE_NO_ONEDNN)
    lines = [
        "| started (UTC) | commit | CPU | Python / jax | passed | skipped | failed | minutes |",
        "|---|---|---|---|---:|---:|---:|---:|",
        f"| {s['started_utc']} | {short(s['commit'])} | {cpu_label(s['cpu'])} "
        f"| {s['python']} / {s['jax']} | {s['passed']} | {s['skipped']} | {len(s['failed'])} "
        f"| {s['seconds'] / 60:.1f} |",
        "",
        "Skip reasons: "
        + "; ".join(f"{reason} ({n})" for reason, n in s["skip_reasons"].items())
        + ". Failed: "
        + (", ".join(f"`{f}`" for f in s["failed"]) or "none")
        + f". Record: `{SUITE_NO_ONEDNN}` (`{s['what']}`).",
    ]
    return "\n".join(lines)


def table_py312_check() -> str:
    s = _record(PY312_CHECK)
    env = s["env"]
    lines = ["| stage | status | seconds | what it found |", "|---|---|---:|---|"]
    for name, st in s["stages"].items():
        lines.append(f"| `{name}` | {st['status']} | {st['seconds']:.1f} | {st.get('key', '')} |")
    commit = s["commit"].split()[0]
    return "\n".join(
        [
            *lines,
            "",
            f"The GPU check in its CPU mode (tiny sizes; `platform: {s['platform']}`), "
            f"{s['wall_seconds']:.0f} s of its {s['budget_seconds']:.0f} s budget, on "
            f"{s['date'][:10]}: Python {env['python']}, jax {env['jax']}, oneDNN: "
            f"{env['onednn']}; {cpu_label(env.get('cpu'))}, 2 cores; commit {short(commit)}"
            + (f" ({s['commit_note']})" if s.get("commit_note") else "")
            + f". Record: `{PY312_CHECK}` with its `summary.md` and logs, kept by "
            "`PY312_CHECK_KEEP=docs/records/py312_check bash scripts/py312_check.sh`.",
        ]
    )


RELAYOUT = "docs/bench/relayout"


def table_relayout_bench(folder: str = RELAYOUT) -> str:
    """The re-layout's before/after bench runs, alternated: train ratio jax / PyTorch."""
    from cifar_jax.perf import bench

    order = ["before1", "after1", "before2", "after2"]
    runs = {name: _record(f"{folder}/{name}/bench.json") for name in order}
    models = [r["model"] for r in runs["before1"]["results"]]
    lines = [
        "| model | " + " | ".join(order) + " |",
        "|---|" + "---|" * len(order),
    ]
    for model in models:
        cells = []
        for name in order:
            t = next(r for r in runs[name]["results"] if r["model"] == model)["train"]
            cells.append(f"{t['ratio']:.2f} / {bench.best_ratio(t):.2f}")
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    commits = {name: short(r["machine"]["commit"]) for name, r in runs.items()}
    cpus = sorted({cpu_label(r["machine"]["cpu"]) for r in runs.values()})
    lines += [
        "",
        "Train ratio jax / PyTorch, median / best rounds. Commits: "
        + ", ".join(f"{n} {c}" for n, c in commits.items())
        + f"; {'; '.join(cpus)}, 2 cores. Records: `{folder}/<run>/bench.json`, made by "
        f"`{runs['before1']['command']}`.",
    ]
    return "\n".join(lines)


RELAYOUT_STEP2 = "docs/records/relayout_step2.json"
RELAYOUT2_BENCH = "docs/bench/relayout2"


def table_relayout2_bench() -> str:
    """Step 2's before/after bench runs, alternated, as step 1's."""
    return table_relayout_bench(RELAYOUT2_BENCH)


def table_relayout_step2() -> str:
    """Step 2 of the re-layout, before and after: each config's compiled train step and
    the weights after 6 real training steps."""
    r = _record(RELAYOUT_STEP2)
    before, after = r["before"], r["after"]
    lines = [
        f"| program | before ({before['commit'][:7]}) | after ({after['commit'][:7]}) | same |",
        "|---|---|---|---|",
    ]

    def compiles(digests: list[str]) -> str:
        counts = {d: digests.count(d) for d in dict.fromkeys(digests)}
        return ", ".join(f"`{d}` ({n} of {len(digests)})" for d, n in counts.items())

    for name, digests in before["compiled_train_step"].items():
        others = after["compiled_train_step"][name]
        same = set(digests) == set(others)
        lines.append(
            f"| {name} train step (compiled) | {compiles(digests)} | {compiles(others)} | "
            f"{'yes' if same else '**no**'} |"
        )
    for name, run in before["trained_6_steps"].items():
        b, a = run["state_sha256"], after["trained_6_steps"][name]["state_sha256"]
        lines.append(
            f"| {name}, `state_sha256` after 6 steps | `{b[:16]}` | `{a[:16]}` | "
            f"{'yes' if a == b else '**no**'} |"
        )
    lines += [
        "",
        f"{cpu_label(r['cpu'])}, 2 cores, jax {r['jax']}, {r['made'][:10]}. Compiled step: "
        "XLA's optimized program with source locations stripped, compiled in separate "
        "processes (the count of each text after its hash; *same*: the same texts before "
        "and after) "
        "(`scripts/compiled_step_hash.py`; `@bf16`: `half_precision=True`). Training: "
        f"`python -m cifar_jax.main` on the real CIFAR-10 with `{' '.join(r['short_run'])}`. "
        f"Record: `{RELAYOUT_STEP2}`, made by `{r['command']}`.",
    ]
    return "\n".join(lines)


TABLES: dict[str, Callable[[], str]] = {
    "readme_headline": table_readme_headline,
    "airbench_runs": table_airbench_runs,
    "fast_time_split": table_fast_time_split,
    "reproduction": table_reproduction,
    "reproduction_mini": table_reproduction_mini,
    "report000_readings": table_report000_readings,
    "report001_readings": table_report001_readings,
    "report003_readings": table_report003_readings,
    "report003_final": table_report003_final,
    "bench_table": table_bench,
    "relayout_bench": table_relayout_bench,
    "relayout_step2": table_relayout_step2,
    "gpu_gate": table_gpu_gate,
    "suite_without_onednn": table_suite_without_onednn,
    "suite_durations": table_suite_durations,
    "py312_check": table_py312_check,
}


def _provenance(d: Any) -> list[tuple[Any, Any, Any]]:
    """(commit, commit_note, machine) of a record: its own, its ``machine``'s, or each
    entry's for a record of entries (estimates.json)."""
    if not isinstance(d, dict):
        return [(None, None, None)]
    if "commit" in d:
        machine = d.get("cpu") or d.get("machine") or d.get("env") or d.get("device_kind")
        return [(d["commit"], d.get("commit_note"), machine)]
    if isinstance(d.get("machine"), dict):
        m = d["machine"]
        return [(m.get("commit"), m.get("commit_note"), m.get("cpu"))]
    entries = [v for v in d.values() if isinstance(v, dict)]
    if entries and all("commit" in v for v in entries):
        return [(v["commit"], v.get("commit_note"), v.get("cpu")) for v in entries]
    return [(None, None, None)]


def audit_records() -> list[str]:
    """Every committed JSON record under docs/ names its commit (an unexplained -dirty
    is a problem), and its machine; a run's results.json also its precision."""
    problems = []
    for path in sorted((ROOT / "docs").rglob("*.json")):
        rel = _rel(path)
        d = load_json(path)
        if path.name == "results.json":
            problems += check_run(rel, d)
            continue
        for commit, note, machine in _provenance(d):
            if not commit or commit == "unknown":
                problems.append(f"{rel}: no commit recorded")
            elif ("-dirty" in str(commit) or "uncommitted" in str(commit)) and not note:
                problems.append(f"{rel}: commit {commit} is -dirty with no commit_note")
            if not machine:
                problems.append(f"{rel}: no machine recorded (cpu / machine)")
    return sorted(set(problems))


# ---------------------------------------------------------------------------------------
# Rendering


def doc_paths() -> list[Path]:
    paths: list[Path] = []
    for pattern in DOC_FILES:
        paths += sorted(ROOT.glob(pattern))
    return paths


def render_text(text: str, where: str, built: dict[str, str]) -> tuple[str, list[str]]:
    """text with every marked table rebuilt, and the names of the tables that changed."""
    changed: list[str] = []

    def replace(m: re.Match[str]) -> str:
        name = m["name"]
        if name not in TABLES:
            raise SystemExit(
                f"render_docs: {where}: unknown table {name!r} (known: {', '.join(TABLES)})"
            )
        if name not in built:
            built[name] = TABLES[name]()
        body = (
            f"<!-- rendered by scripts/render_docs.py from the records; do not edit -->\n\n"
            f"{built[name]}\n\n"
        )
        if m["body"] != body:
            changed.append(name)
        return m["open"] + body + m["close"]

    return MARKER.sub(replace, text), changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--check", action="store_true", help="change nothing; exit 1 naming stale tables"
    )
    args = parser.parse_args(argv)
    built: dict[str, str] = {}
    stale = []
    _REPRO_CACHE.clear()
    try:
        if problems := audit_records():
            raise RecordError("\n".join(problems))
        for path in doc_paths():
            text = path.read_text(encoding="utf-8")
            new, changed = render_text(text, _rel(path), built)
            for name in changed:
                stale.append(f"{_rel(path)}: table {name!r}")
                if args.check:
                    old_body = next(m["body"] for m in MARKER.finditer(text) if m["name"] == name)
                    new_body = next(m["body"] for m in MARKER.finditer(new) if m["name"] == name)
                    diff = difflib.unified_diff(
                        old_body.splitlines(), new_body.splitlines(), "in the doc",
                        "from the records", lineterm="", n=0,
                    )  # fmt: skip
                    print("\n".join(list(diff)[:12]), file=sys.stderr)
            if new != text and not args.check:
                path.write_text(new, encoding="utf-8")
    except RecordError as e:
        print(f"render_docs: records that cannot back a table:\n{e}", file=sys.stderr)
        return 1
    unused = sorted(set(TABLES) - set(built))
    if args.check:
        if stale:
            print(
                "render_docs --check: these tables differ from what the records give:\n  "
                + "\n  ".join(stale)
                + "\nRun `python scripts/render_docs.py` and commit the result (or fix the "
                "record, never the table).",
                file=sys.stderr,
            )
            return 1
        print(f"render_docs --check: {len(built)} tables match their records.")
    else:
        print(f"render_docs: {len(built)} tables rendered, {len(stale)} changed: {stale}")
    if unused:
        print(f"render_docs: tables placed in no doc: {', '.join(unused)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
