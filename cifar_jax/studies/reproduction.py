"""Reproduce the seed reports: our mean ± std over seeds next to each reported number.

    python -m cifar_jax reproduce --workdir=runs/reproduce                 # every result
    python -m cifar_jax reproduce --workdir=runs/reproduce \\
        --results=000_lenet,001_cnn_baseline --seeds=3
    python -m cifar_jax reproduce --list                      # the results and their commands
    python -m cifar_jax reproduce --workdir=runs/reproduce --estimate   # time the rest

Each result of ``../shared/REPRODUCTION.md``'s table that the package has a recipe for is
one :class:`SeedResult` below: a config file (or a variant of a sweep config) trained
exactly as it is defined, once per seed. Runs live in ``<workdir>/<result>/seed_<seed>/``
and are trained by the sweep runner: a finished run is never redone, an interrupted one
resumes from its checkpoint, runs whose recipes are identical are trained once and
shared. Outputs: ``<workdir>/reproduction.json`` and ``reproduction.md`` (result, report,
model, params, the report's number, ours as mean ± std (n), the difference, epochs, time
per run, machine, jax version, commit).

``--budget``/``--data_fraction`` runs go to their own folders and are marked reduced:
they check that a recipe runs, and are never shown as a reproduction.
``--scale_to_data`` trains on a data folder that holds a subset of the data set (the
CIFAR-100 mini subset here): each recipe's validation split is scaled to the training
images there in the recipe's own proportion (report 003: 2,000 of 10,000, so 320 of the
mini subset's 1,600), the runs go to their own folders, and their rows are marked "mini
subset, not comparable". Without it, a recipe whose validation split does not fit the
data stops before anything is trained.
``--estimate`` times a few real train steps of each result that has no finished run
and writes the estimated time of its full recipe on this machine into the table.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import shlex
import tempfile
from collections.abc import Callable
from typing import Any

import ml_collections

from cifar_jax import config as config_lib
from cifar_jax import runtime
from cifar_jax import workdir as workdir_lib
from cifar_jax.data import sources
from cifar_jax.errors import ConfigError, DataError
from cifar_jax.studies import sweep


@dataclasses.dataclass(frozen=True)
class SeedResult:
    """One reported number and the recipe that should give it."""

    id: str  # "<report>_<name>"
    report: str  # "000".."004"
    source: str  # section / table of the report
    recipe: str  # "configs/x.py" or "configs/sweeps/y.py:variant"
    reported: float | tuple[float, float]  # percent; a (low, high) range where so reported
    overrides: tuple[tuple[str, Any], ...] = ()  # applied on top of the recipe
    metric: str = "test_accuracy"  # the results.json key the report's number is
    note: str = ""


# 001's "aug" and "LR sched" steps of Table 3: the baseline CNN with the augmentation the
# report added, then with its ReduceLROnPlateau on validation accuracy (the residual step
# is configs/resnet_small.py).
AUGMENTATION_001 = (
    ("random_crop_padding", 4),
    ("random_flip", True),
    ("autoaugment", "cifar10"),
    ("normalization", "mean_std"),
)
PLATEAU_001 = (
    ("val_examples", 5_000),
    ("schedule", "plateau"),
    ("plateau_metric", "val_accuracy"),
    ("plateau_factor", 0.5),
    ("plateau_patience", 3),
)
_MINI = "mini subset"


def _sweep_rows(
    prefix: str, report: str, source: str, sweep_file: str, rows: tuple[tuple[str, float], ...]
) -> tuple[SeedResult, ...]:
    """The rows of a report's ablation table whose variants a sweep config defines."""
    return tuple(
        SeedResult(f"{prefix}_{name}", report, source, f"{sweep_file}:{name}", acc)
        for name, acc in rows
    )


RESULTS: tuple[SeedResult, ...] = (
    SeedResult("000_lenet", "000", "Table 1, sec. 2.4", "configs/lenet.py", 61.0),
    SeedResult("000_basenet_residual", "000", "sec. 3.2", "configs/basenet_residual.py", 63.0),
    SeedResult("000_deepnet", "000", "sec. 4", "configs/deepnet.py", 90.0, note="'~90%'"),
    SeedResult("001_cnn_baseline", "001", "sec. 1, Table 1", "configs/cnn_baseline.py", 82.35),
    SeedResult(
        "001_augmentation", "001", "sec. 2", "configs/cnn_baseline.py", 82.31, AUGMENTATION_001
    ),
    SeedResult(
        "001_lr_schedule",
        "001",
        "sec. 2",
        "configs/cnn_baseline.py",
        83.08,
        AUGMENTATION_001 + PLATEAU_001,
    ),  # fmt: skip
    SeedResult("001_residual", "001", "sec. 2", "configs/resnet_small.py", 87.43),
    *_sweep_rows(
        "001_act",
        "001",
        "sec. 3",
        "configs/sweeps/activations.py",
        (
            ("relu", 87.20),
            ("leaky_relu", 87.39),
            ("gelu", 87.16),
            ("silu", 85.90),
            ("mish", 85.58),
            ("prelu", 85.04),
            ("elu", 78.57),
        ),
    ),
    *_sweep_rows(
        "001_loss",
        "001",
        "sec. 4",
        "configs/sweeps/losses.py",
        (
            ("cross_entropy", 83.28),
            ("focal", 81.67),
            ("cross_entropy_smooth", 78.71),
            ("cross_entropy_l2", 73.03),
        ),
    ),
    *_sweep_rows(
        "001_opt",
        "001",
        "sec. 6",
        "configs/sweeps/optimizers.py",
        (
            ("sgd", 86.72),
            ("adam", 80.79),
            ("adamw", 86.69),
            ("rmsprop", 74.44),
        ),
    ),
    SeedResult("001_resnet", "001", "sec. 7", "configs/resnet.py", 95.40),
    SeedResult("001_vgg_a", "001", "sec. 10", "configs/sweeps/batchnorm.py:vgg_a", 83.26),
    SeedResult("001_vgg_a_bn", "001", "sec. 10", "configs/sweeps/batchnorm.py:vgg_a_bn", 84.89),
    SeedResult(
        "002_cnn_bn_dropout",
        "002",
        "Expected Results",
        "configs/cnn_bn_dropout.py",
        (75.0, 85.0),
        note="reported as a range",
    ),  # fmt: skip
    *_sweep_rows(
        "003",
        "003",
        "Table 4",
        "configs/sweeps/c100_regularization.py",
        (
            ("baseline", 54.70),
            ("dropout", 52.70),
            ("batchnorm", 59.15),
            ("both", 56.25),
            ("both_aug", 57.65),
            ("advanced", 69.05),
        ),
    ),
    SeedResult("003_resnet", "003", "sec. 6.6", "configs/c100_resnet.py", 79.25),
    SeedResult(
        "004_resnet_5m",
        "004",
        "sec. 3",
        "configs/resnet_5m.py",
        85.16,
        metric="best_val_accuracy",
        note="the report's number is validation accuracy",
    ),  # fmt: skip
)
BY_ID = {r.id: r for r in RESULTS}
# Keys that say where data lives, not what is trained: ignored when runs are compared.
_LOCATION_KEYS = ("data_dir", "tfds_data_dir")


def select(ids: str) -> list[SeedResult]:
    """``"all"`` or comma-separated ids (or report numbers such as ``000``)."""
    if ids in ("", "all"):
        return list(RESULTS)
    chosen: list[SeedResult] = []
    for token in [t.strip() for t in ids.split(",") if t.strip()]:
        matches = [BY_ID[token]] if token in BY_ID else [r for r in RESULTS if r.report == token]
        if not matches:
            raise ConfigError(
                f"unknown result {token!r}; the results are: {', '.join(BY_ID)} (or a report "
                "number such as 000). `python -m cifar_jax reproduce --list` lists them."
            )
        chosen += [m for m in matches if m not in chosen]
    return chosen


def result_config(
    result: SeedResult,
    seed_index: int,
    budget: float = 1.0,
    data_fraction: float = 1.0,
    data_dir: str = "",
) -> ml_collections.ConfigDict:
    """The full training config of one run: the recipe, its seed, and a reduced budget."""
    path, _, variant = result.recipe.partition(":")
    if variant:
        recipe = sweep.load_config_file(path)
    else:
        recipe = sweep.sweep_config(name=result.id, title=result.id, base_config=path,
                                    variants={"recipe": {}})  # fmt: skip
        variant = "recipe"
    with recipe.unlocked():
        recipe.variants[variant].update(dict(result.overrides))
        recipe.budget, recipe.data_fraction = budget, data_fraction
    base_seed = sweep.load_config_file(
        recipe.variants[variant].to_dict().get("base_config", recipe.base_config)
    ).seed  # report 003's recipes seed from 42, the report's split seed
    config = sweep.variant_config(recipe, variant, base_seed + seed_index)
    if data_dir:
        config.data_dir = data_dir
    return config


def _comparable(config: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in config.items() if k not in _LOCATION_KEYS}


def _same_recipe(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Same training, by the fields both configs have (a field added to the package
    after a run was made has its old behaviour as default)."""
    a, b = _comparable(a), _comparable(b)
    return all(_norm(a[k]) == _norm(b[k]) for k in a.keys() & b.keys())


def _norm(value: Any) -> Any:
    return list(value) if isinstance(value, tuple | list) else value


@dataclasses.dataclass
class Run:
    result: SeedResult
    seed: int
    config: ml_collections.ConfigDict
    directory: str
    shared_with: str = ""  # another result whose identical run this one reuses
    # --scale_to_data on a subset of the data set: what was scaled (see fit_to_data).
    scaled: dict[str, int] | None = None


def fit_to_data(
    result_id: str, config: ml_collections.ConfigDict, scale: bool, held: int | None
) -> dict[str, int] | None:
    """Checks the recipe's validation split against the ``held`` training images the data
    folder has (sources.held_train_examples; None: not known before the run).

    On a subset of the data set, ``scale`` cuts the validation split in the recipe's own
    proportion of the training images and returns the sizes (the run is not comparable
    with the report); without it, a split that leaves no training data stops here, before
    any run is trained, instead of failing every run of the plan.
    """
    expected = sources.expected_train_examples(config)
    if held is None or expected is None or held == expected:
        return None
    recipe_val = int(config.val_examples)
    if not scale:
        if recipe_val >= held:
            raise ConfigError(
                f"{result_id}: the data in {config.data_dir} holds {held:,} training images "
                f"of the classes the recipe uses, not the {expected:,} of the complete "
                f"{config.dataset} (it is a subset, such as the CIFAR-100 mini subset), so "
                f"the recipe's val_examples={recipe_val} leaves no training data. Pass "
                "--scale_to_data to scale the validation split to the data in the recipe's "
                f"proportion ({recipe_val / expected:.0%}; such runs are marked 'mini "
                f"subset, not comparable'), or point --data_dir at the complete {config.dataset}."
            )
        return None
    # Exact integer rounding of recipe_val * held / expected; at least 1 image if any.
    val = (recipe_val * held + expected // 2) // expected
    val = max(val, 1) if recipe_val else 0
    if val >= held:
        raise ConfigError(
            f"{result_id}: the data in {config.data_dir} holds only {held} training images: "
            f"too few for a validation split of the recipe's proportion ({val}). Use a "
            "larger data folder."
        )
    config.val_examples = val
    return {"held": held, "expected": expected, "val_examples": val,
            "recipe_val_examples": recipe_val}  # fmt: skip


def plan(
    results: list[SeedResult],
    seeds: int,
    workdir: str,
    budget: float = 1.0,
    data_fraction: float = 1.0,
    data_dir: str = "",
    scale_to_data: bool = False,
) -> list[Run]:
    """Every (result, seed) run, built first so a broken recipe stops before training.

    Each data folder's training images are counted once (fit_to_data)."""
    if seeds < 1:
        raise ConfigError(f"--seeds={seeds}: give at least 1 seed (default 3).")
    reduced = budget < 1 or data_fraction < 1
    suffix = f"__budget{budget:g}_data{data_fraction:g}" if reduced else ""
    held: dict[tuple, int | None] = {}
    runs: list[Run] = []
    for result in results:
        for k in range(seeds):
            config = result_config(result, k, budget, data_fraction, data_dir)
            scaled = fit_to_data(result.id, config, scale_to_data, _held(config, held))
            name = result.id + suffix + (f"__scaled_to_{scaled['held']}" if scaled else "")
            directory = os.path.join(workdir, name, f"seed_{config.seed}")
            twin = next(
                (r for r in runs if _same_recipe(r.config.to_dict(), config.to_dict())), None
            )
            if twin is not None:
                directory, shared = twin.directory, twin.result.id
            else:
                shared = ""
            runs.append(Run(result, config.seed, config, directory, shared, scaled))
    return runs


def _held(config: ml_collections.ConfigDict, cache: dict[tuple, int | None]) -> int | None:
    """sources.held_train_examples, once per data folder and class subset; None where the
    folder holds another data set or unreadable files (the run then reports them)."""
    key = tuple(
        _norm(config.get(k)) for k in ("data_source", "data_dir", "dataset", "label_type",
                                       "class_subset", "allow_partial_train_files")
    )  # fmt: skip
    if key not in cache:
        try:
            cache[key] = sources.held_train_examples(config)
        except DataError:
            cache[key] = None
    return cache[key]


def finished(run: Run) -> dict[str, Any] | None:
    """The run's results.json if it finished with this recipe; a run made with another
    recipe (the config changed since) stops the command instead of being averaged."""
    path = os.path.join(run.directory, "results.json")
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as f:
        results = json.load(f)
    if not _same_recipe(results.get("config", {}), run.config.to_dict()):
        a, b = _comparable(results["config"]), _comparable(run.config.to_dict())
        changed = sorted(k for k in a.keys() & b.keys() if _norm(a[k]) != _norm(b[k]))
        raise ConfigError(
            f"{run.directory} holds a finished run of another recipe than {run.result.id}'s "
            f"today (fields {changed} differ). Move that folder away (or use another "
            "--workdir) to train the current recipe; it is not averaged with new runs."
        )
    return results


def _hms(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def run_seconds(results: dict[str, Any]) -> float:
    """Wall time of one run as its results.json records it (compile + training loop)."""
    return float(results.get("train_seconds") or 0) + float(results.get("compile_seconds") or 0)


def _eta(runs: list[Run], done: dict[str, list[float]], estimates: dict[str, float]) -> str:
    """Time left: each remaining run takes the mean time of its result's finished runs,
    else its --estimate; runs with neither are counted apart."""
    left, unknown = 0.0, 0
    for run in runs:
        times = done.get(run.result.id)
        if times:
            left += sum(times) / len(times)
        elif run.result.id in estimates:
            left += estimates[run.result.id]
        else:
            unknown += 1
    eta = _hms(left)
    return eta + (f" + {unknown} run(s) not yet timed" if unknown else "")


def run_all(runs: list[Run], estimates: dict[str, float] | None = None) -> None:
    """Trains every run that has not finished, one after another, with a progress line."""
    estimates = estimates or {}
    done: dict[str, list[float]] = {}
    pending = []
    for run in runs:
        results = finished(run)
        if results is None:
            pending.append(run)
        else:
            done.setdefault(run.result.id, []).append(run_seconds(results))
    trained: set[str] = set()
    for i, run in enumerate(pending, 1):
        if run.directory in trained:  # shared with a result trained just before
            continue
        print(
            f"[{i}/{len(pending)} to train, {len(runs)} runs in all] {run.result.id}, seed "
            f"{run.seed} -> {run.directory} | ETA {_eta(pending[i - 1 :], done, estimates)}",
            flush=True,
        )
        outcome = sweep.run_one(run.config, run.directory)
        trained.add(run.directory)
        if outcome["status"] == "done":
            done.setdefault(run.result.id, []).append(run_seconds(outcome["results"]))


def estimate(
    runs: list[Run],
    steps: int,
    workdir: str,
    known: dict[str, dict[str, Any]] | None = None,
    save: Callable[[dict[str, dict[str, Any]]], None] | None = None,
) -> dict[str, dict[str, Any]]:
    """Times ``steps`` real train steps of each result without a finished run and scales
    to its full recipe: steps of training only (validation and test passes add a few %).

    Results in ``known`` (earlier estimates) are kept, and their timings reused for results
    of the same net and batch; ``save`` gets every estimate as soon as it is made, so a
    stopped --estimate keeps what it timed and a rerun times only the rest."""
    from cifar_jax import train

    out: dict[str, dict[str, Any]] = dict(known or {})
    timed: dict[tuple, dict[str, Any]] = {}  # one timing per net and batch size
    for row in out.values():
        if row.get("throughput_key") and row.get("images_per_second"):
            timed.setdefault(_hashable(row["throughput_key"]), {
                "train_images_per_second": row["images_per_second"],
                "steps": row["timed_steps"], "cpu": row.get("cpu"),
                "device_kind": row.get("device_kind"), "commit": row.get("commit"),
                "loadavg": row.get("loadavg"),
            })  # fmt: skip
    for run in runs:
        if run.result.id in out or finished(run) is not None:
            continue
        config = ml_collections.ConfigDict(run.config.to_dict())
        full_steps = recipe_steps(config, run.scaled["held"] if run.scaled else None)
        key = _hashable([config[k] for k in _THROUGHPUT_KEYS])
        if key not in timed:
            config = timing_config(config, min(steps, full_steps))
            with tempfile.TemporaryDirectory(dir=workdir) as tmp:
                print(f"estimate: {run.result.id}: timing {config.num_train_steps} steps",
                      flush=True)  # fmt: skip
                timed[key] = train.train_and_evaluate(config, tmp)
                # Whether the timing had the cores to itself: the load it ran under.
                timed[key]["loadavg"] = [round(x, 2) for x in os.getloadavg()]
        results = timed[key]
        per_second = results["train_images_per_second"]
        out[run.result.id] = {
            "images_per_second": per_second,
            "full_recipe_steps": full_steps,
            "estimated_seconds": full_steps * config.batch_size / per_second
            if per_second
            else None,
            "timed_steps": results["steps"],
            "cpu": results.get("cpu"),
            "device_kind": results.get("device_kind"),
            "commit": results.get("commit"),
            # 1, 5 and 15 minute load averages when the timing ended (None: timed before
            # they were recorded): above the core count, other work shared the cores.
            "loadavg": results.get("loadavg"),
            "throughput_key": [_norm(k) for k in key],
        }
        if save is not None:
            save(out)
    return out


def timing_config(config: ml_collections.ConfigDict, steps: int) -> ml_collections.ConfigDict:
    """The recipe cut to ``steps`` train steps on synthetic images of CIFAR's shape, through
    the real pipeline and train step: the same step cost, without loading and testing on
    the real data each time."""
    config = ml_collections.ConfigDict(config.to_dict())
    config.num_train_steps = steps
    config.log_every_steps = steps
    config.data_source = "synthetic"
    config.class_subset = config.max_train_examples = 0
    config.synthetic_train_examples = config.val_examples + (steps + 1) * config.batch_size
    config.synthetic_test_examples = config_lib.eval_batch_size(config)
    config.test_checkpoint, config.early_stopping_patience = "final", 0
    # The schedule's shape does not change a step's cost, and a warmup longer than the
    # timed steps (report 001's optimizer rows warm up for an epoch) would stop the timing.
    config.warmup_epochs = 0.0
    return config


def _hashable(values: list[Any] | tuple[Any, ...]) -> tuple:
    return tuple(tuple(v) if isinstance(v, list | tuple) else v for v in values)


# What a train step's speed depends on; results that share these share one timing.
_THROUGHPUT_KEYS = (
    "model", "batch_size", "activation", "widths", "stage_blocks", "stage_strides",
    "stem_width", "head_widths", "batch_norm", "autoaugment", "mixup_alpha", "cutmix_alpha",
)  # fmt: skip


def recipe_steps(config: ml_collections.ConfigDict, held: int | None = None) -> int:
    """Optimizer steps of the full recipe: epochs x full batches of the training split
    (of the ``held`` training images where the data is a subset, else the source's)."""
    if config.num_train_steps:
        return int(config.num_train_steps)
    classes = 100 if config.dataset == "cifar100" else 10
    total = held or (
        (config.synthetic_train_examples if config.data_source == "synthetic" else 50_000)
        * (config.class_subset or classes)
        // classes
    )
    examples = config.max_train_examples or total - config.val_examples
    return int(config.num_epochs * (examples // config.batch_size))


def _difference(ours: float, reported: float | tuple[float, float]) -> float:
    """Points from the report's number (or from the nearest end of its range)."""
    if isinstance(reported, tuple):
        low, high = reported
        return 0.0 if low <= ours <= high else (ours - high if ours > high else ours - low)
    return ours - reported


def _expected_test_examples(config: dict[str, Any]) -> int:
    classes = 100 if config["dataset"] == "cifar100" else 10
    return 10_000 * (config["class_subset"] or classes) // classes


def summarize(
    runs: list[Run],
    budget: float,
    data_fraction: float,
    estimates: dict[str, dict[str, Any]],
    seeds: int,
    workdir: str,
) -> dict[str, Any]:
    reduced = budget < 1 or data_fraction < 1
    return {
        "made": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": runtime.machine_info(),
        "seeds": seeds,
        "budget": budget,
        "data_fraction": data_fraction,
        "reduced": reduced,
        "rows": summary_rows(runs, reduced, estimates, seeds, workdir),
    }


def summary_rows(
    runs: list[Run],
    reduced: bool,
    estimates: dict[str, dict[str, Any]],
    seeds: int,
    workdir: str,
) -> list[dict[str, Any]]:
    """One row per result: the finished runs' numbers, or the command and estimate of a
    result not run yet. Read from the runs' records only (scripts/render_docs.py renders
    the docs' table from it)."""
    rows: list[dict[str, Any]] = []
    for result in dict.fromkeys(r.result for r in runs):
        mine = [r for r in runs if r.result is result]
        done = [d for d in (finished(r) for r in mine) if d is not None]
        failed = [
            open(os.path.join(r.directory, "error.txt"), encoding="utf-8").readline().strip()
            for r in mine
            if os.path.exists(os.path.join(r.directory, "error.txt"))
        ]
        config, scaled = mine[0].config, mine[0].scaled
        command = (
            f"python -m cifar_jax reproduce --workdir={shlex.quote(workdir)} "
            f"--results={result.id} --seeds={seeds}"
        )
        if scaled:
            command += f" --scale_to_data --data_dir={shlex.quote(config.data_dir)}"
        row: dict[str, Any] = {
            "id": result.id,
            "report": result.report,
            "source": result.source,
            "recipe": result.recipe,
            "model": config.model,
            "reported": list(result.reported)
            if isinstance(result.reported, tuple)
            else result.reported,
            "metric": result.metric,
            "note": result.note,
            "runs": len(done),
            "seeds_planned": len(mine),
            "reduced": reduced,
            "scaled_to_data": scaled,
            "command": command,
            "shared_with": sorted({r.shared_with for r in mine if r.shared_with}),
            "failed": failed,
        }
        if done:
            values = [100 * d[result.metric] for d in done if d.get(result.metric) is not None]
            mean, std = sweep.mean_std(values) if values else (None, None)
            short = [
                d["test_examples"]
                for d in done
                if d.get("test_examples") is not None
                and d["test_examples"] < _expected_test_examples(d["config"])
            ]
            row.update(
                {
                    "per_seed": values,
                    "seeds": [d["seed"] for d in done],
                    "mean": mean,
                    "std": std,
                    "difference": None if mean is None else _difference(mean, result.reported),
                    "trainable_params": done[0]["trainable_params"],
                    "epochs": done[0]["epochs"],
                    # Early stopping ends seeds at different epochs.
                    "epochs_per_seed": [d["epochs"] for d in done],
                    "seconds_per_run": sum(run_seconds(d) for d in done) / len(done),
                    "resumed_runs": sum(1 for d in done if d.get("resumed_from_step")),
                    "cpu": sorted({d.get("cpu") or "not recorded" for d in done}),
                    "device_kind": sorted({d.get("device_kind") or "not recorded" for d in done}),
                    "commit": sorted({d.get("commit") or "not recorded" for d in done}),
                    # The data here is smaller than the report's (e.g. CIFAR-100 mini).
                    "comparable": not reduced and not short and not scaled,
                    "test_examples": done[0].get("test_examples"),
                }
            )
            if scaled:
                row["note"] = _add(row["note"], _scaled_note(scaled, done[0].get("test_examples")))
            elif short:
                row["note"] = _add(
                    row["note"],
                    f"{_MINI}: {short[0]} test images, not the report's split: not comparable",
                )
        else:
            from cifar_jax import model_summary as summary_lib

            row["trainable_params"] = summary_lib.trainable_param_count(config)
            row["epochs"] = config.num_epochs
            if result.id in estimates:
                row["estimate"] = estimates[result.id]
        rows.append(row)
    return rows


def _add(note: str, more: str) -> str:
    return f"{note}; {more}" if note else more


def _scaled_note(scaled: dict[str, int], test_examples: int | None) -> str:
    """What a --scale_to_data run trained on, next to the recipe's split."""
    val, held = scaled["val_examples"], scaled["held"]
    recipe_val, expected = scaled["recipe_val_examples"], scaled["expected"]
    test = f" / {test_examples:,} test" if test_examples else ""
    return (
        f"{_MINI}, not comparable: {held - val:,} train / {val:,} val{test} images "
        f"(validation split scaled from the recipe's {expected - recipe_val:,} / "
        f"{recipe_val:,}, the same {recipe_val / expected:.0%})"
    )


def _epochs(row: dict[str, Any]) -> str:
    """The epochs trained: one number, or the range over seeds where early stopping ended
    them apart."""
    low, high = min(row["epochs_per_seed"]), max(row["epochs_per_seed"])
    return f"{low:g}" if low == high else f"{low:g}-{high:g}"


def _reported(row: dict[str, Any]) -> str:
    r = row["reported"]
    return f"{r[0]:g}-{r[1]:g}" if isinstance(r, list) else f"{r:.2f}"


def to_markdown(summary: dict[str, Any]) -> str:
    m = summary["machine"]
    lines = ["# Reproduction of the seed reports", ""]
    if summary["reduced"]:
        lines += [
            f"**Reduced run** (budget={summary['budget']:g} of each recipe's epochs, "
            f"data_fraction={summary['data_fraction']:g} of its training images): these "
            "numbers check that the recipes run; they are **not reproductions** and are not "
            "compared with the reports.",
            "",
        ]
    if any(row.get("scaled_to_data") for row in summary["rows"]):
        lines += [
            '**Scaled to the data** (`--scale_to_data`): the rows marked "mini subset, not '
            'comparable" trained on a data folder that holds a subset of the data set, with '
            "each recipe's validation split scaled to it in the recipe's proportion. They show "
            "that the recipes run end to end; they are **not reproductions** and are not "
            "compared with the reports.",
            "",
        ]
    lines += [
        f"Summarized {summary['made']} on {m['cpu']}, {m['cores']} cores, {m['devices']} "
        f"({m['backend']}), jax {m['jax']}, commit {m['commit']}. Each run's own CPU and "
        "commit are in reproduction.json. Accuracy in %, mean ± sample std over seeds (n).",
        "",
    ]
    return "\n".join(lines + table_lines(summary["rows"])) + "\n"


def table_lines(rows: list[dict[str, Any]]) -> list[str]:
    """The table of :func:`summary_rows` ("time per run": training, evaluation and
    compile of one run, from its results.json)."""
    lines = [
        "| result | report | model | params | reported | ours | difference | epochs "
        "| time per run | note |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        head = (
            f"| {row['id']} | {row['report']} {row['source']} | {row['model']} "
            f"| {row['trainable_params']:,} | {_reported(row)} "
        )
        if not row["runs"] and row["failed"]:
            lines.append(head + f"| FAILED: {row['failed'][0][:100]} | | | | |")
            continue
        if not row["runs"]:
            est = row.get("estimate")
            when = (
                f"not yet run here; est. {_hms(est['estimated_seconds'])} per run on this "
                f"machine ({est['images_per_second']:,.0f} img/s)"
                if est and est.get("estimated_seconds")
                else "not yet run here"
            )
            lines.append(head + f"| {when} | | {row['epochs']:g} | | `{row['command']}` |")
            continue
        ours = f"{row['mean']:.2f} ± {row['std']:.2f} ({row['runs']})"
        if row["reduced"]:
            diff = "reduced, not compared"
        elif not row["comparable"]:
            diff = "mini subset, not comparable"
        else:
            diff = f"{row['difference']:+.2f}"
        note = row["note"]
        if row["runs"] < row["seeds_planned"]:
            note = _add(note, f"{row['runs']} of {row['seeds_planned']} seeds")
        if row["resumed_runs"]:
            note = _add(
                note, f"{row['resumed_runs']} run(s) resumed: their time is the last segment's"
            )
        if row["failed"]:
            note = _add(note, f"{len(row['failed'])} run(s) FAILED: {row['failed'][0][:100]}")
        if row["shared_with"]:
            note = _add(note, f"same runs as {', '.join(row['shared_with'])}")
        lines.append(
            head + f"| {ours} | {diff} | {_epochs(row)} | {_hms(row['seconds_per_run'])} | {note} |"
        )
    return lines


def write(summary: dict[str, Any], workdir: str) -> None:
    workdir_lib.write_json_atomic(os.path.join(workdir, "reproduction.json"), summary)
    with open(os.path.join(workdir, "reproduction.md"), "w", encoding="utf-8") as f:
        f.write(to_markdown(summary))


def list_results() -> str:
    lines = ["result | report | reported | recipe"]
    for r in RESULTS:
        reported = (
            f"{r.reported[0]:g}-{r.reported[1]:g}" if isinstance(r.reported, tuple) else r.reported
        )
        extra = " + " + ", ".join(f"{k}={v}" for k, v in r.overrides) if r.overrides else ""
        lines.append(f"{r.id} | {r.report} {r.source} | {reported} | {r.recipe}{extra}")
    return "\n".join(lines)
