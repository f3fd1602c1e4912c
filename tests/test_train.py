"""The training spine: train step, sharding, end-to-end runs, results, resume."""

import json
import os
import platform
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from cifar_jax import config as config_lib
from cifar_jax import losses, models, optim, parallel, steps, train
from cifar_jax.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def tiny_config(**overrides):
    """A seconds-long run: synthetic data, LeNet, a few steps."""
    config = config_lib.base_config()
    config.update(
        dict(
            data_source="synthetic",
            synthetic_train_examples=256,
            synthetic_test_examples=100,
            model="lenet",
            optimizer="adam",
            learning_rate=1e-3,
            batch_size=32,
            num_epochs=2,
            log_every_steps=4,
            random_crop_padding=2,
        )
    )
    config.update(overrides)
    return config


def _batch(n=32, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "image": jnp.asarray(rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)),
        "label": jnp.asarray(rng.integers(0, 10, n, dtype=np.int32)),
    }


def _step_fn(config, mesh):
    model = models.build_model(config, 10)
    tx = optim.create_optimizer(config, optax.constant_schedule(config.learning_rate))
    replicated = NamedSharding(mesh, P())
    state = steps.create_train_state(model, tx, config.seed, replicated)
    mean, std = np.full(3, 0.5, np.float32), np.full(3, 0.25, np.float32)
    step = jax.jit(
        steps.make_train_step(
            steps.Objective(model, mean, std, losses.cross_entropy_loss(0.0)), tx
        ),
        in_shardings=(replicated, NamedSharding(mesh, P("data"))),
        out_shardings=(replicated, replicated),
    )
    return state, step


def test_train_step_lowers_loss_on_a_fixed_batch():
    config = tiny_config(learning_rate=3e-3)
    state, step = _step_fn(config, parallel.create_mesh())
    batch = _batch()
    losses = []
    for _ in range(30):
        state, m = step(state, batch)
        losses.append(float(m.compute()["loss"]))
    assert losses[-1] < 0.5 * losses[0], losses
    assert int(state.step) == 30


def test_batch_norm_statistics_change_only_in_training():
    config = tiny_config(model="resnet_small", widths=(8, 8, 8), stem_width=8)
    state, step = _step_fn(config, parallel.create_mesh())
    before = jax.tree.map(np.asarray, state.batch_stats)
    assert jax.tree.leaves(before), "resnet_small must have BatchNorm statistics"
    new_state, _ = step(state, _batch())
    changed = jax.tree.map(lambda a, b: not np.allclose(a, b), before, new_state.batch_stats)
    assert all(jax.tree.leaves(changed))


_BATCH_SIZE_CHECK = textwrap.dedent(
    """
    import json
    import jax
    from cifar_jax import parallel
    from cifar_jax.errors import ConfigError
    mesh = parallel.create_mesh()
    errors = {}
    for batch_size in (8, 16, 256, 12, 4, 0, -8):
        try:
            parallel.check_batch_size(batch_size, mesh)
            errors[batch_size] = None
        except ConfigError as e:
            errors[batch_size] = str(e)
    try:
        parallel.check_batch_size(20, mesh, name="eval_batch_size")
    except ConfigError as e:
        errors["eval"] = str(e)
    print(json.dumps({"devices": jax.device_count(), "errors": errors}))
    """
)


def test_batch_size_the_devices_cannot_split_is_a_clear_error():
    """On 8 devices (forced CPU devices, in a subprocess: this process has one, over which
    every batch size divides), a batch size that is no multiple of 8 is a ConfigError
    naming the batch size, the device count and the fix; multiples of 8 pass. Catches a
    check that lets 12 through (its shards would be uneven) or rejects 16."""
    env = dict(
        os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=8"
    )
    out = subprocess.run(
        [sys.executable, "-c", _BATCH_SIZE_CHECK],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["devices"] == 8
    errors = result["errors"]
    assert errors["8"] is None and errors["16"] is None and errors["256"] is None, errors
    for batch_size in ("12", "4", "0", "-8"):
        message = errors[batch_size]
        assert message is not None, f"batch_size={batch_size} passed on 8 devices"
        assert f"batch_size={batch_size} " in message, message
        assert "8 devices" in message and "multiple of 8" in message, message
    assert errors["eval"].startswith("eval_batch_size=20 "), errors["eval"]
    # The 1-device test process: any positive size splits, a non-positive one does not.
    mesh = parallel.create_mesh(jax.devices()[:1])
    parallel.check_batch_size(7, mesh)
    with pytest.raises(ConfigError, match="positive multiple of 1"):
        parallel.check_batch_size(0, mesh)


SHARDED_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import jax, numpy as np
    sys.path.insert(0, {tests!r})
    from test_train import tiny_config, _batch, _step_fn
    from cifar_jax import parallel
    assert jax.device_count() == 8, jax.devices()
    config = tiny_config(model="resnet_small", widths=(8, 8, 8), stem_width=8, dropout_rate=0.3,
                         optimizer="sgd", learning_rate=0.05)
    out = {{}}
    for name, devices in (("one", jax.devices()[:1]), ("eight", jax.devices())):
        state, step = _step_fn(config, parallel.create_mesh(devices))
        losses = []
        for i in range(3):
            state, m = step(state, _batch(32, seed=i))
            losses.append(float(m.compute()["loss"]))
        leaves = jax.tree.leaves((state.params, state.batch_stats))
        out[name] = {{"losses": losses, "leaves": [np.asarray(x).ravel().tolist() for x in leaves]}}
    print(json.dumps(out))
    """
)


def test_eight_device_step_matches_one_device():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8")
    script = SHARDED_SCRIPT.format(tests=str(REPO / "tests"))
    out = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    np.testing.assert_allclose(result["one"]["losses"], result["eight"]["losses"], rtol=1e-5)
    # 8 shards sum the gradients in another order than 1 device; after a few Adam steps
    # the float32 rounding reaches ~1.4e-5 on an AVX-512 Xeon (Sapphire Rapids class; it
    # stayed under 1e-5 on AVX2/Zen 5). A sharding bug (per-shard BatchNorm statistics, a
    # gradient not summed over the mesh) moves the parameters by 1e-3 and more.
    for a, b in zip(result["one"]["leaves"], result["eight"]["leaves"], strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=5e-5)


def test_train_and_evaluate_writes_results_logs_and_checkpoints(tmp_path):
    config = tiny_config(val_examples=64)
    results = train.train_and_evaluate(config, str(tmp_path))
    on_disk = json.loads((tmp_path / "results.json").read_text())
    for key in (
        "test_accuracy",
        "test_loss",
        "trainable_params",
        "epochs",
        "steps",
        "train_seconds",
        "train_images_per_second",
        "compile_seconds",
        "seed",
        "state_sha256",
        "config",
    ):
        assert key in on_disk, key
    assert on_disk["trainable_params"] == 62006
    assert on_disk["steps"] == 2 * (192 // 32) and on_disk["epochs"] == 2
    assert 0.0 <= on_disk["test_accuracy"] <= 1.0
    assert on_disk["state_sha256"] == results["state_sha256"]
    assert on_disk["train_images_per_second"] > 0
    records = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    splits = {r.get("split") for r in records}
    assert {"train", "val", "test"} <= splits
    assert any(f.startswith("events") for f in os.listdir(tmp_path / "tensorboard"))
    steps = sorted(int(s) for s in os.listdir(tmp_path / "checkpoints") if s.isdigit())
    assert steps[-1] == on_disk["steps"]


def test_the_time_record_puts_each_phase_in_its_field(tmp_path, monkeypatch):
    """results.json's ``time``: known delays planted in the data load (3 s), the model
    build (2 s) and every checkpoint save (0.3 s) show up in their own fields and not in a
    neighbour's, and the phases add up to the wall time from process start. (Synthetic
    data loads in well under the build's 2 s, so a data field holding both is caught; the
    init phase's own time, iterator and checkpoint set-up, is seconds on busy cores, so
    it gets no upper bound.)"""
    from cifar_jax import checkpoint, data, experiment

    def slowed(fn, seconds, calls):
        def wrapper(*args, **kwargs):
            calls.append(fn.__name__)
            time.sleep(seconds)
            return fn(*args, **kwargs)

        return wrapper

    calls: list[str] = []
    monkeypatch.setattr(data, "load_dataset", slowed(data.load_dataset, 3.0, calls))
    # The model, optimizer and state: experiment.build's _assemble, after the data phase
    # (build also loads the data, so a delay planted on build itself lands in the data).
    monkeypatch.setattr(experiment, "_assemble", slowed(experiment._assemble, 2.0, calls))
    monkeypatch.setattr(checkpoint, "save", slowed(checkpoint.save, 0.3, calls))
    config = tiny_config(num_epochs=2, val_examples=32, tta="flip")
    config.checkpoint_every_steps = 0  # one periodic save per epoch
    monkeypatch.setattr(train, "_runs_started", 0)  # as this process's first run
    started = time.monotonic()
    results = train.train_and_evaluate(config, str(tmp_path))
    elapsed = time.monotonic() - started
    t = results["time"]
    saves = calls.count("save")
    assert calls.count("load_dataset") == calls.count("_assemble") == 1 and saves >= 2
    assert 3.0 <= t["data_seconds"] < 3.0 + 2.0
    assert 2.0 <= t["init_seconds"]
    assert 0.3 * saves <= t["checkpoint_seconds"] <= t["training_seconds"] < elapsed - 5.0
    assert 0 < t["validation_seconds"] <= t["training_seconds"] - t["checkpoint_seconds"]
    assert t["compile_seconds"] > 0 and t["test_seconds"] > 0 and t["tta_seconds"] > 0
    phases = [t[k] for k in train.PhaseClock.PHASES]
    assert sum(phases) + t["other_seconds"] == pytest.approx(t["wall_seconds"])
    assert 0 <= t["other_seconds"] < 1.0
    # The wall time runs from this (pytest's) process start, before the run began.
    assert t["wall_seconds"] > elapsed and t["startup_seconds"] >= t["wall_seconds"] - elapsed
    assert t["origin"] == "process start"


def test_a_later_run_in_one_process_times_itself_not_the_runs_before_it(tmp_path, monkeypatch):
    """sweep and reproduce train their runs one after another in one process. Bug caught:
    every run's wall time (and its start-up phase, and a time to target) counted from the
    process start, so a sweep's second run recorded the first one's time as its own."""
    monkeypatch.setattr(train, "_runs_started", 0)
    durations, times = [], []
    for name in ("first", "second"):
        started = time.monotonic()
        results = train.train_and_evaluate(tiny_config(num_epochs=1), str(tmp_path / name))
        durations.append(time.monotonic() - started)
        times.append(results["time"])
    first, second = times
    assert first["origin"] == "process start" and first["wall_seconds"] > durations[0]
    assert second["origin"] == "train_and_evaluate call"
    assert 0 < second["wall_seconds"] <= durations[1]  # the process had run > durations[0]
    assert second["startup_seconds"] < 0.5 * durations[1] and durations[0] > 1.0
    phases = [second[k] for k in train.PhaseClock.PHASES]
    assert sum(phases) + second["other_seconds"] == pytest.approx(second["wall_seconds"])


def test_same_seed_same_numbers_other_seed_differs(tmp_path):
    a = train.train_and_evaluate(tiny_config(num_epochs=1), str(tmp_path / "a"))
    b = train.train_and_evaluate(tiny_config(num_epochs=1), str(tmp_path / "b"))
    c = train.train_and_evaluate(tiny_config(num_epochs=1, seed=1), str(tmp_path / "c"))
    assert a["state_sha256"] == b["state_sha256"]
    assert a["test_loss"] == b["test_loss"]
    assert a["state_sha256"] != c["state_sha256"]


def _main_cmd(workdir, *overrides):
    return [
        sys.executable, "-m", "cifar_jax.main", f"--config={REPO / 'configs' / 'lenet.py'}",
        f"--workdir={workdir}", "--config.data_source=synthetic", "--config.batch_size=32",
        "--config.synthetic_train_examples=512", "--config.synthetic_test_examples=64",
        "--config.val_examples=0", "--config.num_epochs=4", "--config.log_every_steps=4",
        "--config.checkpoint_every_steps=4", *overrides,
    ]  # fmt: skip


def _committed_steps(workdir: Path) -> list[int]:
    root = workdir / "checkpoints"
    if not root.exists():
        return []
    return sorted(
        int(d.name) for d in root.iterdir()
        if d.name.isdigit() and (d / "commit_success.txt").exists()
    )  # fmt: skip


@pytest.mark.slow
def test_kill_and_resume_gives_bitwise_identical_params(tmp_path):
    straight = tmp_path / "straight"
    out = subprocess.run(
        _main_cmd(straight), check=True, capture_output=True, text=True, timeout=600
    )
    expected = json.loads((straight / "results.json").read_text())
    # cli.prepare_process set up the host allocator before JAX started (glibc Linux).
    if sys.platform == "linux" and platform.libc_ver()[0] == "glibc":
        assert "host memory: glibc, freed memory reused" in out.stdout + out.stderr

    killed = tmp_path / "killed"
    proc = subprocess.Popen(_main_cmd(killed), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    while time.time() < deadline and len(_committed_steps(killed)) < 2 and proc.poll() is None:
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    assert not (killed / "results.json").exists(), "the run finished before it could be killed"
    assert _committed_steps(killed), "no checkpoint was written before the kill"
    out = subprocess.run(_main_cmd(killed), capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "Resumed from checkpoint" in out.stdout
    resumed = json.loads((killed / "results.json").read_text())
    assert resumed["resumed_from_step"] > 0
    assert resumed["state_sha256"] == expected["state_sha256"]
    assert resumed["test_loss"] == expected["test_loss"]


def test_unknown_config_field_is_rejected_without_traceback(tmp_path):
    out = subprocess.run(
        _main_cmd(tmp_path / "w", "--config.learnin_rate=0.1"),
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode != 0
    assert "learnin_rate" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.slow
def test_lenet_learns_real_cifar10(tmp_path, real_data_root):
    config = config_lib.base_config()
    config.update(
        dict(
            data_dir=str(real_data_root / "cifar10"), data_source="files", model="lenet",
            optimizer="adam", learning_rate=2e-3, batch_size=128, max_train_examples=5000,
            num_epochs=8, normalization="half", random_crop_padding=0, random_flip=True,
            eval_batch_size=1000, log_every_steps=20,
        )
    )  # fmt: skip
    results = train.train_and_evaluate(config, str(tmp_path))
    # Chance is 10%; the full 10,000-image real test set is evaluated.
    assert results["test_accuracy"] > 0.35, results["test_accuracy"]
