"""The reproduce command: results table, seeds, no redo, shared runs, reduced runs marked,
stale runs refused, CIFAR-100 mini marked not comparable, time estimates."""

from __future__ import annotations

import json
import math
import os
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

from cifar_jax.errors import ConfigError
from cifar_jax.studies import reproduction as reproduce

REPO = Path(__file__).resolve().parents[1]
TINY = ("--budget=0.02", "--data_fraction=0.02")


def run_cli(workdir: Path, data: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.pop("XLA_FLAGS", None)
    cmd = [sys.executable, "-m", "cifar_jax", "reproduce", f"--workdir={workdir}",
           f"--data_dir={data}", *args]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env)


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory, real_data_root) -> tuple[Path, Path, dict]:
    """One seed of one result, then two seeds of three results in the same workdir."""
    workdir = tmp_path_factory.mktemp("reproduce")
    data = real_data_root / "cifar10"
    first = run_cli(workdir, data, "--results=000_lenet", "--seeds=1", *TINY)
    assert first.returncode == 0, first.stderr[-3000:]
    lenet0 = workdir / "000_lenet__budget0.02_data0.02" / "seed_0" / "results.json"
    stamp = lenet0.stat().st_mtime_ns
    second = run_cli(
        workdir, data, "--results=000_lenet,001_cnn_baseline,001_loss_cross_entropy",
        "--seeds=2", *TINY,
    )  # fmt: skip
    assert second.returncode == 0, second.stderr[-3000:]
    assert lenet0.stat().st_mtime_ns == stamp, "a finished run was trained again"
    return workdir, data, {"first": first.stdout, "second": second.stdout}


def _seed_records(folder: Path) -> list[dict]:
    """The results.json of every seed folder under one result's folder, in seed order."""
    paths = sorted(folder.glob("seed_*/results.json"), key=lambda p: int(p.parent.name[5:]))
    return [json.loads(p.read_text()) for p in paths]


def _hms(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


@pytest.mark.slow
def test_runs_every_seed_once_and_writes_the_tables(tiny_runs):
    workdir, _, out = tiny_runs
    # The second call trains lenet seed 1 and the baseline's two seeds, nothing else:
    # the cross-entropy row of the loss table is the baseline recipe, trained once.
    assert "[1/5 to train" in out["second"] and "[3/5 to train" in out["second"]
    assert out["second"].count("to train, 6 runs in all]") == 3
    assert "ETA" in out["second"]
    # The runs on disk: the recipe's seed and the next, once each, for the two recipes
    # (the cross-entropy row has no folder of its own). The seeds come from the recipe
    # files, not from the code under test.
    suffix = "__budget0.02_data0.02"
    folders = {"000_lenet": "000_lenet" + suffix, "001_cnn_baseline": "001_cnn_baseline" + suffix}
    folders["001_loss_cross_entropy"] = folders["001_cnn_baseline"]
    seeds = {}
    for rid, recipe in (("000_lenet", "lenet"), ("001_cnn_baseline", "cnn_baseline")):
        base = runpy.run_path(str(REPO / "configs" / f"{recipe}.py"))["get_config"]().seed
        seeds[rid] = [base, base + 1]
    seeds["001_loss_cross_entropy"] = seeds["001_cnn_baseline"]
    on_disk = sorted(p.parent.relative_to(workdir).as_posix()
                     for p in workdir.glob("*/seed_*/results.json"))  # fmt: skip
    assert on_disk == sorted(f"{folders[r]}/seed_{s}" for r in ("000_lenet", "001_cnn_baseline")
                             for s in seeds[r])  # fmt: skip
    summary = json.loads((workdir / "reproduction.json").read_text())
    rows = {r["id"]: r for r in summary["rows"]}
    assert list(rows) == ["000_lenet", "001_cnn_baseline", "001_loss_cross_entropy"]
    md = (workdir / "reproduction.md").read_text()
    assert "not reproductions" in md
    lines: dict[str, str] = {}
    cells_of: dict[str, str] = {}
    for rid, row in rows.items():
        # What each row must hold, computed here from the runs' own records: the
        # accuracies in %, their mean and sample std (n - 1), the epochs and time per run.
        records = _seed_records(workdir / folders[rid])
        assert [r["seed"] for r in records] == [r["config"]["seed"] for r in records]
        values = [100 * r["test_accuracy"] for r in records]
        mean = sum(values) / len(values)
        std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
        seconds = sum(r["train_seconds"] + r["compile_seconds"] for r in records) / len(records)
        epochs = sorted({r["epochs"] for r in records})
        assert row["seeds"] == [r["seed"] for r in records] == seeds[rid]
        assert row["per_seed"] == values
        assert row["runs"] == row["seeds_planned"] == len(records) == 2 and row["reduced"]
        assert row["mean"] == mean and row["std"] == std  # the same floats, not approx
        assert row["epochs_per_seed"] == [r["epochs"] for r in records]
        assert row["trainable_params"] == records[0]["trainable_params"]
        assert row["commit"] and row["cpu"] != ["not recorded"]
        # The table row renders those numbers.
        cells = (
            f"| {mean:.2f} ± {std:.2f} (2) | reduced, not compared | "
            + (f"{epochs[0]:g}" if len(epochs) == 1 else f"{epochs[0]:g}-{epochs[-1]:g}")
            + f" | {_hms(seconds)} |"
        )
        cells_of[rid] = cells
        (line,) = [x for x in md.splitlines() if x.startswith(f"| {rid} |")]
        assert cells in line, (cells, line)
        lines[rid] = line
    lenet = "| 000_lenet | 000 Table 1, sec. 2.4 | lenet | 62,006 | 61.00 "
    assert lines["000_lenet"] == lenet + cells_of["000_lenet"] + "  |"  # no note
    assert lines["001_loss_cross_entropy"].endswith(
        cells_of["001_loss_cross_entropy"] + " same runs as 001_cnn_baseline |"
    )
    assert rows["001_loss_cross_entropy"]["shared_with"] == ["001_cnn_baseline"]
    assert rows["000_lenet"]["trainable_params"] == 62_006
    assert summary["machine"]["jax"] and summary["machine"]["commit"]


def test_rerun_trains_nothing(tiny_runs):
    workdir, data, _ = tiny_runs
    before = (workdir / "reproduction.json").read_text()
    out = run_cli(
        workdir, data, "--results=000_lenet,001_cnn_baseline,001_loss_cross_entropy",
        "--seeds=2", *TINY,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    assert "to train" not in out.stdout
    after = json.loads((workdir / "reproduction.json").read_text())
    assert [r["per_seed"] for r in after["rows"]] == [
        r["per_seed"] for r in json.loads(before)["rows"]
    ]


def test_a_run_of_another_recipe_is_refused_not_averaged(tiny_runs, tmp_path):
    workdir, data, _ = tiny_runs
    copy = tmp_path / "w"
    subprocess.run(["cp", "-r", str(workdir), str(copy)], check=True)
    results = copy / "000_lenet__budget0.02_data0.02" / "seed_1" / "results.json"
    stored = json.loads(results.read_text())
    stored["config"]["learning_rate"] = 0.5
    results.write_text(json.dumps(stored))
    out = run_cli(copy, data, "--results=000_lenet", "--seeds=2", "--summarize", *TINY)
    assert out.returncode == 1
    assert "another recipe" in out.stderr and "learning_rate" in out.stderr


def test_full_budget_rows_are_compared_with_the_report(tmp_path):
    """A full-recipe run's row gets the difference; a CIFAR-100 run on fewer test images
    than the report's split is marked not comparable; a range counts inside as 0."""
    runs = reproduce.plan(reproduce.select("000_lenet,002_cnn_bn_dropout,003_baseline"), 1,
                          str(tmp_path))  # fmt: skip
    for run, accuracy, test_examples in zip(runs, (0.6396, 0.80, 0.50), (10_000, 10_000, 400),
                                            strict=True):  # fmt: skip
        os.makedirs(run.directory)
        Path(run.directory, "results.json").write_text(json.dumps({
            "test_accuracy": accuracy, "trainable_params": 1, "epochs": 1.0, "seed": run.seed,
            "train_seconds": 60.0, "compile_seconds": 2.0, "test_examples": test_examples,
            "cpu": "test cpu", "commit": "abc", "config": run.config.to_dict(),
        }))  # fmt: skip
    summary = reproduce.summarize(runs, 1.0, 1.0, {}, 1, str(tmp_path))
    rows = {r["id"]: r for r in summary["rows"]}
    assert rows["000_lenet"]["difference"] == pytest.approx(63.96 - 61.0)
    assert rows["000_lenet"]["comparable"]
    assert rows["002_cnn_bn_dropout"]["difference"] == 0.0  # inside the reported 75-85%
    assert not rows["003_baseline"]["comparable"] and "mini" in rows["003_baseline"]["note"]
    md = reproduce.to_markdown(summary)
    assert "| +2.96 |" in md and "not comparable" in md and "Reduced run" not in md
    assert rows["003_baseline"]["seeds"] == [42]  # report 003's recipes seed from 42


@pytest.mark.slow
def test_estimate_times_real_steps_for_results_not_run(tmp_path, real_data_root, capsys):
    # 002 tests its best-validation checkpoint: a short timing run must not trip on it.
    ids = "000_basenet_residual,001_loss_focal,001_loss_cross_entropy_smooth,002_cnn_bn_dropout"
    runs = reproduce.plan(reproduce.select(ids), 1, str(tmp_path),
                          data_dir=str(real_data_root / "cifar10"))  # fmt: skip
    estimates = reproduce.estimate(runs, 3, str(tmp_path))
    # The two loss rows train the same net at the same batch size: timed once.
    assert capsys.readouterr().out.count("estimate: ") == 3
    assert estimates["002_cnn_bn_dropout"]["full_recipe_steps"] == 20 * (45_000 // 64)
    smooth_id = "001_loss_cross_entropy_smooth"
    focal, smooth = estimates["001_loss_focal"], estimates[smooth_id]
    assert focal["images_per_second"] == smooth["images_per_second"]
    assert focal["full_recipe_steps"] == 25 * (50_000 // 128)
    est = estimates["000_basenet_residual"]
    assert est["full_recipe_steps"] == 100 * (40_000 // 1024)
    assert est["images_per_second"] > 0
    assert est["estimated_seconds"] == pytest.approx(3900 * 1024 / est["images_per_second"])
    # Each timing says the load it ran under (bug caught: estimates made on shared cores
    # that nothing in the record could tell from ones made alone).
    assert len(est["loadavg"]) == 3 and focal["loadavg"] == smooth["loadavg"]
    row = reproduce.summarize(runs, 1.0, 1.0, estimates, 1, str(tmp_path))
    assert "not yet run here; est." in reproduce.to_markdown(row)
    assert not list(tmp_path.glob("tmp*")), "the timing run's folder was left behind"
    # A rerun (after a stop) keeps what was timed: the smoothing row reuses the focal row's
    # timing of the same net and batch, nothing is timed again, each estimate is saved.
    kept = {k: v for k, v in json.loads(json.dumps(estimates)).items() if k != smooth_id}
    saved: list[set[str]] = []
    again = reproduce.estimate(runs, 3, str(tmp_path), kept, lambda d: saved.append(set(d)))
    assert "estimate: " not in capsys.readouterr().out
    assert again[smooth_id]["images_per_second"] == focal["images_per_second"]
    assert again[smooth_id]["estimated_seconds"] == pytest.approx(smooth["estimated_seconds"])
    assert again[smooth_id]["loadavg"] == focal["loadavg"]
    assert saved == [set(estimates)]


def test_selection_and_bad_input():
    assert [r.id for r in reproduce.select("000")] == [
        "000_lenet", "000_basenet_residual", "000_deepnet",
    ]  # fmt: skip
    assert len(reproduce.select("all")) == len(reproduce.RESULTS)
    with pytest.raises(ConfigError, match="unknown result 'lenet'"):
        reproduce.select("lenet")
    with pytest.raises(ConfigError, match="--seeds=0"):
        reproduce.plan(reproduce.select("000_lenet"), 0, "/tmp/unused")
    assert len({r.id for r in reproduce.RESULTS}) == len(reproduce.RESULTS)


@pytest.mark.parametrize("result", reproduce.RESULTS, ids=lambda r: r.id)
def test_every_result_builds_a_valid_config(result):
    """Every row's recipe loads, validates and names the model it says."""
    from cifar_jax import validation

    config = reproduce.result_config(result, 0)
    validation.validate_config(config)
    assert config.num_epochs > 0
    for key, value in result.overrides:
        assert config[key] == value


def test_scale_to_data_cuts_the_recipes_split_on_the_mini_subset(tmp_path, real_data_root):
    """Report 003 holds out 2,000 of its 10,000 training images (20%); on the mini subset's
    1,600 that is 320, stratified: 16 of each class's 80."""
    import numpy as np

    from cifar_jax.data import load_dataset

    mini = str(real_data_root / "cifar100-mini")
    (run,) = reproduce.plan(reproduce.select("003_baseline"), 1, str(tmp_path), data_dir=mini,
                            scale_to_data=True)  # fmt: skip
    assert run.config.val_examples == 320
    assert run.scaled == {"held": 1600, "expected": 10_000, "val_examples": 320,
                          "recipe_val_examples": 2000}  # fmt: skip
    assert run.directory.endswith(os.path.join("003_baseline__scaled_to_1600", "seed_42"))
    data = load_dataset(run.config)
    assert (len(data.train), len(data.val)) == (1280, 320)
    assert np.bincount(data.val.labels, minlength=20).tolist() == [16] * 20
    assert np.bincount(data.train.labels, minlength=20).tolist() == [64] * 20
    # The full recipe's steps (for --estimate and the ETA) count the images held.
    assert reproduce.recipe_steps(run.config, run.scaled["held"]) == 50 * (1280 // 32)
    # On data that is the complete release, nothing is scaled nor marked.
    cifar10 = str(real_data_root / "cifar10")
    (full,) = reproduce.plan(reproduce.select("000_lenet"), 1, str(tmp_path), data_dir=cifar10,
                             scale_to_data=True)  # fmt: skip
    assert full.scaled is None and full.config.val_examples == 10_000
    # A folder of another data set, or none yet (the run downloads the release): the run
    # reports it, the plan does not guess.
    for where in (cifar10, str(tmp_path / "empty")):
        (other,) = reproduce.plan(reproduce.select("003_baseline"), 1, str(tmp_path),
                                  data_dir=where, scale_to_data=True)  # fmt: skip
        assert other.scaled is None and other.config.val_examples == 2000


def test_scaled_rows_are_marked_mini_subset_not_comparable(tmp_path, real_data_root):
    mini = str(real_data_root / "cifar100-mini")
    runs = reproduce.plan(reproduce.select("003_baseline,003_resnet"), 2, str(tmp_path),
                          data_dir=mini, scale_to_data=True)  # fmt: skip
    for run, accuracy, epochs in zip(runs[:2], (0.30, 0.32), (17.0, 24.0), strict=True):
        os.makedirs(run.directory)
        Path(run.directory, "results.json").write_text(json.dumps({
            "test_accuracy": accuracy, "trainable_params": 1, "epochs": epochs,
            "seed": run.seed, "train_seconds": 60.0, "compile_seconds": 2.0,
            "test_examples": 400, "cpu": "test cpu", "commit": "abc",
            "config": run.config.to_dict(),
        }))  # fmt: skip
    summary = reproduce.summarize(runs, 1.0, 1.0, {}, 2, str(tmp_path))
    done, todo = summary["rows"]
    assert not done["comparable"] and done["scaled_to_data"]["val_examples"] == 320
    assert "1,280 train / 320 val / 400 test images" in done["note"]
    assert "--scale_to_data --data_dir=" in todo["command"]
    md = reproduce.to_markdown(summary)
    # Early stopping ended the two seeds at different epochs: the range is shown.
    assert "| 31.00 ± 1.41 (2) | mini subset, not comparable | 17-24 |" in md
    assert "Scaled to the data" in md and "not reproductions" in md


def test_scale_to_data_end_to_end_and_unscaled_mini_stops_clearly(tmp_path, real_data_root):
    """A tiny budget of report 003's baseline trains on the mini subset with the split
    scaled; without the option the same command stops before training, naming the fix."""
    mini = real_data_root / "cifar100-mini"
    out = run_cli(tmp_path, mini, "--results=003_baseline", "--seeds=1", "--budget=0.02")
    assert out.returncode == 1
    assert "val_examples=2000 leaves no training data" in out.stderr
    assert "--scale_to_data" in out.stderr and "1,600 training images" in out.stderr
    assert "to train" not in out.stdout and not list(tmp_path.glob("003_*"))
    out = run_cli(tmp_path, mini, "--results=003_baseline", "--seeds=1", "--budget=0.02",
                  "--scale_to_data")  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    results = json.loads(
        (tmp_path / "003_baseline__budget0.02_data1__scaled_to_1600" / "seed_42"
         / "results.json").read_text()
    )  # fmt: skip
    assert results["config"]["val_examples"] == 320 and results["test_examples"] == 400
    (row,) = json.loads((tmp_path / "reproduction.json").read_text())["rows"]
    assert row["runs"] == 1 and not row["comparable"] and row["reduced"]
    assert "mini subset, not comparable" in (tmp_path / "reproduction.md").read_text()


@pytest.mark.parametrize("result", reproduce.RESULTS, ids=lambda r: r.id)
def test_every_result_can_be_timed_by_estimate(result):
    """--estimate's short timing run of every row is a valid run: e.g. report 001's
    optimizer rows warm up for a whole epoch, longer than the steps timed."""
    from cifar_jax import optim, validation

    config = reproduce.timing_config(reproduce.result_config(result, 0), 3)
    validation.validate_config(config)
    optim.learning_rate_schedule(config, steps_per_epoch=4, total_steps=3)
    assert config.num_train_steps == 3 and config.data_source == "synthetic"
    assert config.batch_size == reproduce.result_config(result, 0).batch_size
