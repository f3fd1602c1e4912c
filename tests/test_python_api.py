"""The Python API (``cifar_jax.load_run`` -> ``run.predict``) and self-contained workdirs:
a run predicts with its data set gone and ``$CIFAR_JAX_DATA`` unset, evaluates on a
compatible data set given with ``--data_dir``, and runs made before ``inference.json``
still load (from the data set, with a message)."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from tiny_runs import REPO, link_cifar10, run_command, trained_real

import cifar_jax
from cifar_jax import evaluation as evaluate
from cifar_jax import inference, runs
from cifar_jax.data import pipeline
from cifar_jax.errors import CifarJaxError, DataError

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, real_data_root):
    return trained_real(tmp_path_factory, real_data_root, "real_bn")


@pytest.fixture(scope="module")
def run(workdir):
    return cifar_jax.load_run(str(workdir))


@pytest.fixture(scope="module")
def images(run):
    return run.dataset.test.images[:5]


def _copy(workdir, to):
    """The run copied elsewhere (as to another machine), without its caches."""
    shutil.copytree(workdir, to, ignore=shutil.ignore_patterns("eval", "report", "tensorboard"))
    return to


def _point_data_dir_at(workdir, data_dir) -> None:
    config = json.loads((workdir / "config.json").read_text())
    config["data_dir"] = str(data_dir)
    (workdir / "config.json").write_text(json.dumps(config))


def test_import_is_cheap_and_load_run_is_the_run_loader():
    code = (
        "import sys, cifar_jax\n"
        "assert 'jax' not in sys.modules, 'import cifar_jax started jax'\n"
        "from cifar_jax import runs\n"
        "assert cifar_jax.load_run is runs.load_run and cifar_jax.LoadedRun is runs.LoadedRun\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]


def test_predict_gives_probabilities_and_class_names(run, images):
    result = run.predict(images)
    assert result.probs.shape == (5, 10) and result.probs.dtype == np.float32
    np.testing.assert_allclose(result.probs.sum(-1), 1.0, atol=1e-5)
    assert result.class_names == run.class_names and len(result) == 5
    assert result.classes == [run.class_names[i] for i in result.probs.argmax(-1)]
    top = result.top_k(3)
    assert [name for name, _ in top[0]][0] == result.classes[0]
    assert [p for _, p in top[0]] == sorted((p for _, p in top[0]), reverse=True)
    # The same step evaluate uses: the same numbers as a whole split through it.
    split = run.dataset.test.take(np.arange(5))
    np.testing.assert_allclose(result.probs, runs.predict_probs(run, split), atol=1e-6)


def test_flax_parts_give_the_same_probabilities(run, images):
    """run.model / run.variables / run.config, applied by hand as a user would."""
    import jax

    x = pipeline.normalize(images, run.mean, run.std)
    logits = jax.jit(lambda v, x: run.model.apply(v, x, train=False))(run.variables, x)
    np.testing.assert_allclose(
        jax.nn.softmax(logits, -1), run.predict(images).probs, atol=1e-5, rtol=0
    )
    assert run.config.model == "c100_bn" and run.config.widths == (8, 16)
    assert set(run.variables) == {"params", "batch_stats"}


def test_predict_is_sharded_over_several_devices(run, workdir, images, tmp_path):
    """8 simulated devices: the batch is padded to a multiple of 8 and split over them;
    the probabilities are the 1-device ones."""
    np.save(tmp_path / "images.npy", images)
    code = (
        "import numpy as np, jax, cifar_jax\n"
        f"run = cifar_jax.load_run({str(workdir)!r})\n"
        "assert run.mesh.devices.size == 8 == len(jax.devices())\n"
        f"probs = run.predict(np.load({str(tmp_path / 'images.npy')!r})).probs\n"
        f"np.save({str(tmp_path / 'probs.npy')!r}, probs)\n"
    )
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8")
    env["JAX_PLATFORMS"] = "cpu"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr[-3000:]
    np.testing.assert_allclose(
        np.load(tmp_path / "probs.npy"), run.predict(images).probs, atol=1e-5, rtol=0
    )


def test_checkpoint_choices(workdir):
    steps = sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())
    best = cifar_jax.load_run(str(workdir), checkpoint="best")
    first = cifar_jax.load_run(str(workdir), checkpoint=steps[0])
    assert (best.checkpoint, first.step) == ("best", steps[0])
    assert cifar_jax.load_run(str(workdir), checkpoint="latest").step == steps[-1]


def test_same_result_as_the_predict_command(run, workdir, images, tmp_path):
    paths = []
    for i, image in enumerate(images):
        paths.append(str(tmp_path / f"img_{i}.png"))
        Image.fromarray(image).save(paths[-1])
    out = run_command("predict", f"--workdir={workdir}", "--json", "--top_k=10", *paths)
    assert out.returncode == 0, out.stderr[-3000:]
    from_files = run.predict(paths).probs
    np.testing.assert_array_equal(from_files, run.predict(images).probs)  # PNG is lossless
    for p, pred in zip(from_files, json.loads(out.stdout)["predictions"], strict=True):
        for t in pred["top_k"]:
            assert t["class"] == run.class_names[t["index"]]
            assert t["probability"] == pytest.approx(float(p[t["index"]]), abs=1e-6)


@pytest.mark.parametrize(
    "bad,message",
    [
        (np.zeros((2, 32, 32, 3), np.float32), r"dtype float32; .*uint8.*\(x \* 255\)"),
        (np.zeros((32, 32, 3), np.uint8), r"without the batch axis; pass images\[None\]"),
        (np.zeros((2, 3, 32, 32), np.uint8), r"shape \(2, 3, 32, 32\); .*channels-first"),
        (np.zeros((2, 28, 28, 3), np.uint8), r"shape \(2, 28, 28, 3\); .*Resize"),
        (np.zeros((0, 32, 32, 3), np.uint8), "no images given"),
        ("missing.png", "image missing.png does not exist"),
        ([1, 2, 3], "dtype int64"),
    ],
)
def test_bad_images_are_clear_errors(run, bad, message):
    with pytest.raises(CifarJaxError, match=message):
        run.predict(bad)


def test_runs_without_their_data_predict_and_evaluate_elsewhere(
    run, workdir, images, tmp_path, monkeypatch, real_data_root
):
    """The workdir on 'another machine': its data dir gone, $CIFAR_JAX_DATA unset, no
    download possible. predict (API and command) works; evaluate works on a compatible
    copy of the data given with data_dir (--data_dir), with the training run's test
    numbers."""
    moved = _copy(workdir, tmp_path / "moved")
    gone = link_cifar10(real_data_root, tmp_path / "data_gone")
    _point_data_dir_at(moved, gone)
    shutil.rmtree(gone)
    monkeypatch.delenv("CIFAR_JAX_DATA", raising=False)
    monkeypatch.setenv("CIFAR_JAX_DOWNLOAD_URL_BASE", "http://127.0.0.1:9/")  # no download
    here = cifar_jax.load_run(str(moved))
    np.testing.assert_array_equal(here.predict(images).probs, run.predict(images).probs)
    assert here.class_names == run.class_names
    with pytest.raises(DataError):  # nothing was read: there is nothing to read
        _ = here.dataset
    png = tmp_path / "x.png"
    Image.fromarray(images[0]).save(png)
    env = {"HOME": str(tmp_path), "CIFAR_JAX_DOWNLOAD_URL_BASE": "http://127.0.0.1:9/"}
    out = run_command("predict", f"--workdir={moved}", "--json", str(png), env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    top = json.loads(out.stdout)["predictions"][0]["top_k"][0]
    assert top["class"] == run.predict(images[:1]).classes[0]
    # evaluate --data_dir=ELSEWHERE, in this process (what the command runs after its flags).
    elsewhere = link_cifar10(real_data_root, tmp_path / "data_elsewhere")
    metrics = evaluate.evaluate_run(runs.load_run(str(moved), data_dir=str(elsewhere)))
    results = json.loads((workdir / "results.json").read_text())
    assert metrics["num_examples"] == 10000
    assert metrics["accuracy"] == pytest.approx(results["test_accuracy"], abs=1e-6)


def test_a_data_set_with_other_classes_is_refused(run):
    config = run.config.copy_and_resolve_references()
    config.data_source, config.synthetic_train_examples = "synthetic", 256
    with pytest.raises(DataError, match="has the classes .*class_0.*trained on .*airplane"):
        runs.load_data(config, run.spec)


def test_a_run_made_before_inference_json_loads_from_its_data(run, workdir, tmp_path, caplog):
    old = _copy(workdir, tmp_path / "old")
    (old / inference.SPEC_FILE).unlink()
    with caplog.at_level(logging.WARNING):
        loaded = cifar_jax.load_run(str(old))
    assert "has no inference.json (the run predates it)" in caplog.text
    assert loaded.class_names == run.class_names
    np.testing.assert_allclose(loaded.mean, run.mean, rtol=1e-6)
    np.testing.assert_allclose(loaded.std, run.std, rtol=1e-6)
    assert runs.write_missing_spec(loaded) == str(old / inference.SPEC_FILE)
    assert inference.read_spec(str(old)).class_names == run.class_names
    assert runs.write_missing_spec(loaded) is None  # written once


def test_a_damaged_spec_is_a_clear_error(workdir, tmp_path):
    broken = _copy(workdir, tmp_path / "broken")
    (broken / inference.SPEC_FILE).write_text('{"model": "c100_bn"}')
    with pytest.raises(CifarJaxError, match="not an inference spec .*missing: .*class_names"):
        cifar_jax.load_run(str(broken))
