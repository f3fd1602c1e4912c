"""Loading a run back (cifar_jax.runs), evaluating it, TTA, and their errors."""

import json
import os
import shutil

import jax.numpy as jnp
import numpy as np
import pytest
from tiny_runs import run_command, trained

from cifar_jax import evaluation as evaluate
from cifar_jax import runs, tta
from cifar_jax.data import ArraySplit
from cifar_jax.errors import CheckpointError, CifarJaxError, ConfigError


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return trained(tmp_path_factory, "lenet")


@pytest.fixture(scope="module")
def loaded(workdir):
    return runs.load_run(str(workdir))


def test_evaluate_matches_training_test_numbers_and_sees_every_image_once(workdir, loaded):
    results = json.loads((workdir / "results.json").read_text())
    m = evaluate.evaluate_run(loaded, "none", cache=False)
    assert m["num_examples"] == 100 == len(loaded.dataset.test)  # 100 = 3 batches + padding
    assert np.sum(m["confusion_matrix"]) == 100
    assert sum(c["support"] for c in m["per_class"].values()) == 100
    assert m["step"] == results["steps"]
    assert m["accuracy"] == pytest.approx(results["test_accuracy"], abs=1e-6)
    assert m["loss"] == pytest.approx(results["test_loss"], rel=1e-4)
    assert m["state_sha256"] == results["state_sha256"]
    # Named like results.json's, so an evaluation can back a docs table (it once had none).
    assert m["commit"] == results["commit"] and m["cpu"] == results["cpu"]
    for key in ("macro", "weighted", "top_k_accuracy", "ece", "mean_confidence_correct"):
        assert key in m
    assert set(m["top_k_accuracy"]) == {"1", "2", "3", "4", "5"}


def test_flip_tta_averages_the_image_and_its_mirror(loaded):
    split = loaded.dataset.test
    mirrored = ArraySplit(
        images=np.ascontiguousarray(split.images[:, :, ::-1]), labels=split.labels
    )
    plain = runs.predict_probs(loaded, split)
    flipped = runs.predict_probs(loaded, mirrored)
    both = runs.predict_probs(loaded, split, "flip")
    np.testing.assert_allclose(both, (plain + flipped) / 2, atol=1e-6)
    assert runs.predict_probs(loaded, split, "flip_translate").shape == plain.shape


def test_training_reports_the_same_tta_numbers(workdir, loaded):
    results = json.loads((workdir / "results.json").read_text())
    m = evaluate.evaluate_run(loaded, "flip", cache=False)
    assert m["tta"] == "flip" and m["tta_metrics"]["num_views"] == 2
    assert m["tta_accuracy"] == pytest.approx(results["test_accuracy_tta"], abs=1e-6)
    assert m["tta_loss"] == pytest.approx(results["test_loss_tta"], rel=1e-4)


def test_translate_shifts_with_zero_padding():
    x = jnp.arange(16).reshape(1, 4, 4, 1)
    down = np.asarray(tta.translate(x, 1, 0))[0, :, :, 0]
    np.testing.assert_array_equal(down[0], 0)
    np.testing.assert_array_equal(down[1:], np.arange(12).reshape(3, 4))
    left = np.asarray(tta.translate(x, 0, -2))[0, :, :, 0]
    np.testing.assert_array_equal(left[:, :2], np.arange(16).reshape(4, 4)[:, 2:])
    np.testing.assert_array_equal(left[:, 2:], 0)
    assert tta.views(x, "flip_translate").shape == (10, 1, 4, 4, 1)
    np.testing.assert_array_equal(tta.views(x, "flip")[1], x[:, :, ::-1])
    with pytest.raises(ConfigError, match="tta="):
        tta.check_mode("rotate")


def test_predictions_are_cached_per_weights(loaded):
    probs, labels = evaluate.predictions(loaded, "test", "none")
    path = os.path.join(loaded.workdir, "eval", "predictions_test_none.npz")
    assert os.path.exists(path)
    before = os.path.getmtime(path)
    again, _ = evaluate.predictions(loaded, "test", "none")
    np.testing.assert_array_equal(probs, again)
    assert os.path.getmtime(path) == before
    with np.load(path) as saved:
        assert str(saved["state_sha256"]) == loaded.state_sha256()
    val_probs, val_labels = evaluate.predictions(loaded, "val", "none", cache=False)
    assert val_probs.shape == (64, 10) and val_labels.shape == (64,)


def test_best_and_numbered_checkpoints(workdir):
    steps = sorted(int(s) for s in os.listdir(workdir / "checkpoints") if s.isdigit())
    run = runs.load_run(str(workdir), steps[0])
    assert run.step == steps[0] and run.checkpoint == f"step {steps[0]}"
    best = runs.load_run(str(workdir), "best")  # the run has a validation split
    assert best.checkpoint_path.startswith(str(workdir / "best"))


def test_batchnorm_run_loads_and_matches(tmp_path_factory):
    workdir = trained(tmp_path_factory, "bn")
    run = runs.load_run(str(workdir))
    assert run.state.batch_stats, "the model keeps BatchNorm statistics"
    results = json.loads((workdir / "results.json").read_text())
    m = evaluate.evaluate_run(run, cache=False)
    assert m["accuracy"] == pytest.approx(results["test_accuracy"], abs=1e-6)


def test_clear_errors_for_missing_things(tmp_path, workdir):
    with pytest.raises(CifarJaxError, match="does not exist"):
        runs.load_run(str(tmp_path / "nope"))
    with pytest.raises(CifarJaxError, match="no config.json"):
        runs.load_run(str(tmp_path))
    empty = tmp_path / "fresh"
    empty.mkdir()
    shutil.copy(workdir / "config.json", empty / "config.json")
    with pytest.raises(CheckpointError, match="no checkpoint in .*checkpoints"):
        runs.load_run(str(empty))
    with pytest.raises(CheckpointError, match="no best checkpoint"):
        runs.load_run(str(empty), "best")
    with pytest.raises(CheckpointError, match="no checkpoint at step 99999"):
        runs.load_run(str(workdir), 99999)
    with pytest.raises(ConfigError, match="latest, best or a step"):
        runs.parse_checkpoint("newest")


def test_checkpoint_of_another_model_is_a_clear_error(tmp_path, workdir):
    other = tmp_path / "other"
    shutil.copytree(workdir, other, ignore=shutil.ignore_patterns("eval", "report", "tensorboard"))
    config = json.loads((other / "config.json").read_text())
    config["model"] = "cnn_baseline"
    (other / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="does not fit the model .*cnn_baseline"):
        runs.load_run(str(other))


def test_evaluate_command_writes_metrics_json(workdir):
    out = run_command("evaluate", f"--workdir={workdir}", "--tta=flip_translate")
    assert out.returncode == 0, out.stderr[-3000:]
    assert "accuracy" in out.stdout and "TTA flip_translate (10 views)" in out.stdout
    m = json.loads((workdir / "eval" / "metrics.json").read_text())
    assert m["tta"] == "flip_translate" and 0 <= m["tta_accuracy"] <= 1
    assert len(m["confusion_matrix"]) == 10 and len(m["per_class"]) == 10


def test_evaluate_on_eight_devices_gives_the_same_numbers(workdir, tmp_path):
    copy = tmp_path / "copy"  # without eval/: nothing cached, everything is evaluated
    shutil.copytree(workdir, copy, ignore=shutil.ignore_patterns("eval", "report", "tensorboard"))
    env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
    out = run_command("evaluate", f"--workdir={copy}", "--tta=flip", env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    results = json.loads((workdir / "results.json").read_text())
    m = json.loads((copy / "eval" / "metrics.json").read_text())
    assert m["num_examples"] == 100
    assert m["accuracy"] == pytest.approx(results["test_accuracy"], abs=1e-6)
    assert m["loss"] == pytest.approx(results["test_loss"], rel=1e-4)
    assert m["tta_accuracy"] == pytest.approx(results["test_accuracy_tta"], abs=1e-6)


def test_evaluate_command_errors_have_no_traceback(tmp_path, workdir):
    out = run_command("evaluate", f"--workdir={tmp_path / 'missing'}")
    assert out.returncode == 1
    assert "error: workdir" in out.stderr and "Traceback" not in out.stderr
    out = run_command("evaluate", f"--workdir={workdir}", "--checkpoint=12345")
    assert out.returncode == 1
    assert "no checkpoint at step 12345" in out.stderr and "Traceback" not in out.stderr


def test_workdir_commands_load_runs_through_the_cli_helper(workdir, loaded, monkeypatch):
    """cli.load_workdir_run (what evaluate/report/predict/analyze call): the same run as
    runs.load_run, a step number given as text, and a bad checkpoint name rejected."""
    from cifar_jax.commands import cli

    # Process set-up (logging, XLA flags) reads absl flags, parsed only under app.run.
    prepared = []
    monkeypatch.setattr(cli, "prepare_process", prepared.append)

    run = cli.load_workdir_run(str(workdir), "latest", None)
    assert (run.step, run.checkpoint_path) == (loaded.step, loaded.checkpoint_path)
    steps = sorted(int(s) for s in os.listdir(workdir / "checkpoints") if s.isdigit())
    assert cli.load_workdir_run(str(workdir), str(steps[0]), None).step == steps[0]
    with pytest.raises(CifarJaxError):
        cli.load_workdir_run(str(workdir), "newest", None)
    assert len(prepared) == 3 and prepared[0].model == "lenet"  # validated run config
