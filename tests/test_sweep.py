"""Sweeps: summary table, resume without redoing runs, exact reruns, failed variants."""

from __future__ import annotations

import concurrent.futures
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import held
import ml_collections
import pytest

from cifar_jax import model_summary as summary
from cifar_jax.studies import sweep

REPO = Path(__file__).resolve().parents[1]

TINY_SWEEP = f'''
from cifar_jax.studies.sweep import sweep_config


def get_config():
    return sweep_config(
        name="tiny",
        title="Tiny test sweep",
        base_config="{REPO / "configs" / "lenet.py"}",
        base_overrides=dict(
            data_source="synthetic", synthetic_train_examples=256, synthetic_test_examples=64,
            batch_size=32, val_examples=0, num_epochs=2, log_every_steps=4,
        ),
        variants={{
            "relu": {{"activation": "relu"}},
            "gelu": {{"activation": "gelu"}},
        }},
        seeds=(0, 1),
    )
'''


def run_sweep_cmd(
    config: Path, workdir: Path, *extra: str, wait: bool = True, check=True, env=None
):
    env = dict(os.environ) if env is None else env
    env.pop("XLA_FLAGS", None)
    cmd = [sys.executable, "-m", "cifar_jax", "sweep", f"--config={config}", f"--workdir={workdir}",
           *extra]  # fmt: skip
    if not wait:
        return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env)
    if check:
        assert out.returncode == 0, out.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("sweep")
    config = root / "tiny_sweep.py"
    config.write_text(TINY_SWEEP)
    workdir = root / "full"
    run_sweep_cmd(config, workdir)
    return config, workdir


def test_summary_has_every_variant_with_mean_and_std(tiny):
    _, workdir = tiny
    data = json.loads((workdir / "summary.json").read_text())
    rows = {r["variant"]: r for r in data["rows"]}
    assert set(rows) == {"relu", "gelu"}
    for row in rows.values():
        assert row["runs"] == 2 and not row["failed"]
        accs = row["test_accuracy_per_seed"]
        mean = sum(accs) / 2
        assert row["test_accuracy_mean"] == pytest.approx(mean)
        assert row["test_accuracy_std"] == pytest.approx(abs(accs[0] - accs[1]) / 2**0.5)
        assert row["trainable_params"] == 62006
    table = (workdir / "summary.md").read_text()
    assert "| relu |" in table and "| gelu |" in table and "±" in table
    # Stamped with what made it, so a committed table can be traced and rerun.
    assert data["machine"]["commit"] and data["machine"]["cpu"]
    assert f"commit {data['machine']['commit']}" in table
    assert (workdir / "summary.png").stat().st_size > 10_000
    for variant in ("relu", "gelu"):
        for seed in (0, 1):
            assert (workdir / variant / f"seed_{seed}" / "results.json").exists()


def test_killed_sweep_resumes_without_redoing_runs_and_reproduces(tiny, tmp_path):
    config, full = tiny
    workdir = tmp_path / "killed"
    proc = run_sweep_cmd(config, workdir, wait=False)
    first = workdir / "relu" / "seed_0" / "results.json"
    deadline = time.time() + 300
    while not first.exists() and proc.poll() is None:
        assert time.time() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (workdir / "summary.json").exists(), "the sweep finished before the kill"
    stamp = first.stat().st_mtime_ns
    out = run_sweep_cmd(config, workdir)
    assert first.stat().st_mtime_ns == stamp  # the finished run was not redone
    assert "[1/4] relu, seed 0" in out.stdout
    # Same seeds, same numbers: the rerun reproduces the uninterrupted sweep exactly.
    a = json.loads((full / "summary.json").read_text())["rows"]
    b = json.loads((workdir / "summary.json").read_text())["rows"]
    for ra, rb in zip(a, b, strict=True):
        assert ra["test_accuracy_per_seed"] == rb["test_accuracy_per_seed"]
        assert ra["test_loss_mean"] == rb["test_loss_mean"]


def test_sigterm_stops_the_whole_sweep_and_a_rerun_finishes_it(tiny, tmp_path):
    """A preempted sweep must stop (exit 143, checkpoint saved), not record the run as
    failed and go on training the next variant on a machine that is being taken away."""
    config, full = tiny
    workdir = tmp_path / "term"
    holds_dir = tmp_path / "holds"
    holds_dir.mkdir()
    proc = run_sweep_cmd(config, workdir, "--config.seeds=(0,)", wait=False,
                         env=held.env(holds_dir, "step@5"))  # fmt: skip
    held.wait(holds_dir, "step@5", [proc])  # the first run, at step 5 of 16
    proc.send_signal(signal.SIGTERM)
    held.release(holds_dir, "step@5")
    _, stderr = proc.communicate(timeout=300)
    assert not (workdir / "relu" / "seed_0" / "results.json").exists()
    assert sorted(os.listdir(workdir / "relu" / "seed_0" / "checkpoints")) == ["5"]
    assert proc.returncode == 143, stderr.decode()[-2000:]
    assert "Rerun the same command to resume" in stderr.decode()
    assert not (workdir / "relu" / "seed_0" / "error.txt").exists()
    assert not (workdir / "gelu").exists(), "the sweep went on after SIGTERM"
    run_sweep_cmd(config, workdir, "--config.seeds=(0,)")
    rows = {r["variant"]: r for r in json.loads((workdir / "summary.json").read_text())["rows"]}
    want = {r["variant"]: r for r in json.loads((full / "summary.json").read_text())["rows"]}
    assert rows["relu"]["test_accuracy_per_seed"] == want["relu"]["test_accuracy_per_seed"][:1]


@pytest.mark.slow
def test_trials_run_apart_then_summarize_gives_the_same_table(tiny, tmp_path):
    """What a Slurm job array does: --list, one --trial per task, then --summarize."""
    config, full = tiny
    workdir = tmp_path / "array"
    listed = subprocess.run(
        [sys.executable, "-m", "cifar_jax", "sweep", f"--config={config}", f"--workdir={workdir}",
         "--list"], capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert listed.returncode == 0, listed.stderr[-2000:]
    commands = listed.stdout.strip().splitlines()
    assert len(commands) == 4 and all(c.endswith(f"--trial={k}") for k, c in enumerate(commands))
    assert all(f"--workdir={workdir}" in c for c in commands)
    # In any order and two at a time, as a scheduler starts them.
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        trials = pool.map(lambda k: (k, run_sweep_cmd(config, workdir, f"--trial={k}")),
                          (3, 0, 2, 1))  # fmt: skip
        for k, out in trials:
            assert f"[trial {k} of 4]" in out.stdout
    assert not (workdir / "summary.json").exists()
    run_sweep_cmd(config, workdir, "--summarize")
    a = json.loads((full / "summary.json").read_text())["rows"]
    b = json.loads((workdir / "summary.json").read_text())["rows"]
    assert [r["test_accuracy_per_seed"] for r in a] == [r["test_accuracy_per_seed"] for r in b]
    bad = run_sweep_cmd(config, workdir, "--trial=4", check=False)
    assert bad.returncode == 1 and "trials 0..3" in bad.stderr


def test_failed_variant_is_reported_and_others_run(tiny, tmp_path):
    config, _ = tiny
    failing = tmp_path / "failing_sweep.py"
    failing.write_text(
        config.read_text().replace(
            '"gelu": {"activation": "gelu"}',
            '"gelu": {"activation": "gelu", "optimizer": "sgd", "learning_rate": 1e30}',
        )
    )
    out = run_sweep_cmd(failing, tmp_path / "w", "--config.seeds=(0,)")
    data = json.loads((tmp_path / "w" / "summary.json").read_text())
    rows = {r["variant"]: r for r in data["rows"]}
    assert rows["relu"]["runs"] == 1
    assert rows["gelu"]["runs"] == 0 and "loss is nan" in rows["gelu"]["failed"][0]
    assert "FAILED" in (tmp_path / "w" / "summary.md").read_text()
    assert (tmp_path / "w" / "gelu" / "seed_0" / "error.txt").exists()
    assert "FAILED" in out.stdout


def test_budget_scales_epochs_and_data_and_is_marked(tiny):
    config, _ = tiny
    s = sweep.load_config_file(str(config))
    s.budget, s.data_fraction = 0.5, 0.5
    c = sweep.variant_config(s, "relu", 3)
    assert c.num_epochs == 1 and c.max_train_examples == 128 and c.seed == 3
    md = sweep.to_markdown(sweep.summarize(s, {"relu": []}))
    assert "Reduced-budget run" in md


@pytest.mark.parametrize("path", sorted((REPO / "configs" / "sweeps").glob("*.py")),
                         ids=lambda p: p.stem)  # fmt: skip
def test_every_sweep_config_builds_every_variant(path):
    s = sweep.load_config_file(str(path))
    assert s.title and s.variants and s.seeds
    counts = {v: summary.trainable_param_count(sweep.variant_config(s, v, 0)) for v in s.variants}
    assert all(n > 0 for n in counts.values())
    if path.stem in ("widths", "models_c10", "batchnorm"):
        assert len(set(counts.values())) == len(counts)  # the variants really differ


def test_unknown_override_in_a_variant_is_rejected(tiny):
    config, _ = tiny
    s = sweep.load_config_file(str(config))
    with s.unlocked():
        s.variants.relu.learnin_rate = 0.1
    with pytest.raises(sweep.ConfigError, match="learnin_rate"):
        sweep.variant_config(s, "relu", 0)


@pytest.mark.parametrize("bad", ["smoothing_0.3", "a/b", ""])
def test_a_variant_name_no_folder_can_hold_is_a_config_error_naming_the_fix(bad):
    # Bug caught: a dotted name reached ml_collections, which stopped the sweep with a bare
    # ValueError about "dotted keys" that named neither the variant rule nor the fix.
    with pytest.raises(sweep.ConfigError, match="letters, digits"):
        sweep.sweep_config(name="t", title="t", base_config="configs/lenet.py",
                           variants={bad: {}})  # fmt: skip


def _timeless(row: dict) -> dict:
    return {k: v for k, v in row.items() if "seconds" not in k}


@pytest.mark.slow
def test_parallel_trials_match_the_sequential_sweep_and_get_a_memory_share(tiny, tmp_path):
    """Two trials at once (seed 0 of both variants), each in its own process: the same
    parameters (state_sha256) and summary rows as the sequential sweep; each process got
    XLA_CLIENT_MEM_FRACTION = 0.9/2 (its own log line says so); the CPU note is printed;
    and a rerun trains nothing."""
    config, full = tiny
    workdir = tmp_path / "parallel"
    args = ("--config.seeds=(0,)", "--config.parallel_trials=2")
    out = run_sweep_cmd(config, workdir, *args)
    assert "2 trial(s) to train, up to 2 at once" in out.stdout
    assert "note: a CPU run" in out.stdout  # cores shared: said, not refused
    lines = out.stdout.splitlines()
    first_done = next(i for i, line in enumerate(lines) if " done: test accuracy" in line)
    assert any(line.startswith("[2/2] gelu, seed 0 -> ") for line in lines[:first_done])
    for variant in ("relu", "gelu"):
        run = workdir / variant / "seed_0"
        got = json.loads((run / "results.json").read_text())
        want = json.loads((full / variant / "seed_0" / "results.json").read_text())
        assert got["state_sha256"] == want["state_sha256"], variant
        assert got["test_accuracy"] == want["test_accuracy"]
        log = (run / "trial.log").read_text()
        assert f"--config.parallel_trials=2 --trial={0 if variant == 'relu' else 1}" in log
        assert "device memory: XLA_CLIENT_MEM_FRACTION=0.450" in log
    rows = json.loads((workdir / "summary.json").read_text())["rows"]
    want_rows = json.loads((full / "summary.json").read_text())["rows"]
    for row, want in zip(rows, want_rows, strict=True):
        assert set(row) == set(want) and row["runs"] == 1
        assert row["test_accuracy_per_seed"] == want["test_accuracy_per_seed"][:1]
    assert "| relu |" in (workdir / "summary.md").read_text()

    stamps = {p: p.stat().st_mtime_ns for p in workdir.glob("*/seed_0/results.json")}
    again = run_sweep_cmd(config, workdir, *args)
    assert "0 trial(s) to train" in again.stdout and again.stdout.count("finished earlier") == 2
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    rerun = json.loads((workdir / "summary.json").read_text())["rows"]
    assert [_timeless(r) for r in rerun] == [_timeless(r) for r in rows]


def test_sigterm_stops_parallel_trials_after_each_saves_a_checkpoint(tiny, tmp_path):
    """The sweep's SIGTERM reaches every running trial; each saves a checkpoint and
    stops; the sweep exits 143 with the resume hint and records no failure."""
    config, _ = tiny
    workdir = tmp_path / "term"
    proc = run_sweep_cmd(config, workdir, "--config.seeds=(0,)", "--config.parallel_trials=2",
                         "--config.base_overrides.num_epochs=500", wait=False)  # fmt: skip
    logs = [workdir / v / "seed_0" / "trial.log" for v in ("relu", "gelu")]
    deadline = time.time() + 300
    while not all(p.exists() and "| step " in p.read_text() for p in logs):
        assert proc.poll() is None and time.time() < deadline, "the trials did not start"
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 143, stderr.decode()[-2000:]
    assert "2 running trial(s) were sent SIGTERM" in stderr.decode()
    assert "Rerun the same command to resume" in stderr.decode()
    pids = [int(line.rsplit("pid ", 1)[1].rstrip(")")) for line in stdout.decode().splitlines()
            if " (trial " in line]  # fmt: skip
    assert len(pids) == 2
    for pid, log in zip(pids, logs, strict=True):
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)  # waited for, not left running
        run = log.parent
        assert "stopped by SIGTERM" in log.read_text()
        assert any((run / "checkpoints").iterdir())
        assert not (run / "results.json").exists() and not (run / "error.txt").exists()
    assert not (workdir / "summary.json").exists()


def test_a_run_folder_another_process_holds_stops_the_sweep_not_recorded_as_failed(tmp_path):
    """A trial whose folder another live run holds is not a failed variant: the sweep
    stops (on main it wrote error.txt into the other run's folder and went on)."""
    from cifar_jax import config as config_lib
    from cifar_jax.workdir import WorkdirInUseError, WorkdirLock

    config = config_lib.base_config()
    config.update(dict(data_source="synthetic", synthetic_train_examples=64,
                       synthetic_test_examples=32, batch_size=32, num_train_steps=1))  # fmt: skip
    with WorkdirLock(str(tmp_path), what="run"):
        with pytest.raises(WorkdirInUseError, match="in use by run pid"):
            sweep.run_one(config, str(tmp_path))
    assert not (tmp_path / "error.txt").exists()


@pytest.mark.parametrize("value", [0, -2, 1.5, True, "2"])
def test_parallel_trials_must_be_a_whole_number_of_at_least_one(value):
    bad = ml_collections.ConfigDict({"parallel_trials": value})  # as a sweep file may set it
    with pytest.raises(sweep.ConfigError, match=rf"parallel_trials={value!r}: give a whole"):
        sweep.parallel_trials(bad)


def test_parallel_trials_env_keeps_a_memory_fraction_the_user_set():
    env, note = sweep.trial_env(3, {"PATH": "/bin"})
    assert env["XLA_CLIENT_MEM_FRACTION"] == "0.300" and "0.300" in note
    # jaxlib refuses both names at once: a fraction under the old name is left alone.
    env, note = sweep.trial_env(3, {"XLA_PYTHON_CLIENT_MEM_FRACTION": ".2"})
    assert "XLA_CLIENT_MEM_FRACTION" not in env and "kept" in note
    assert env["XLA_PYTHON_CLIENT_MEM_FRACTION"] == ".2"
