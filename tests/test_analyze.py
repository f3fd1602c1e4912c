"""Loss landscape and BatchNorm study (cifar_jax.studies.analysis) at a tiny budget."""

import importlib.util
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from tiny_runs import REPO, run_command, trained

from cifar_jax import classification, runs
from cifar_jax.studies import analysis as analyze


def _config(name, **overrides):
    spec = importlib.util.spec_from_file_location(name, REPO / "configs" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config()
    config.update(
        dict(
            data_source="synthetic",
            synthetic_train_examples=128,
            synthetic_test_examples=32,
            widths=(4, 8),  # the first two VGG-A stages only: compiles in seconds
            head_widths=(16,),
            batch_size=16,
        )
    )
    config.update(overrides)
    return config


def test_random_direction_is_filter_normalized():
    params = {
        "conv": {
            "kernel": jnp.arange(1.0, 1 + 3 * 3 * 2 * 4).reshape(3, 3, 2, 4),
            "bias": jnp.ones(4),
        },
        "dense": {"kernel": jnp.full((5, 3), 2.0)},
        "bn": {"scale": jnp.ones(7)},
    }
    d = analyze.random_direction(params, jax.random.key(0))
    w, x = np.asarray(params["conv"]["kernel"]), np.asarray(d["conv"]["kernel"])
    np.testing.assert_allclose(
        np.linalg.norm(x.reshape(-1, 4), axis=0),
        np.linalg.norm(w.reshape(-1, 4), axis=0),
        rtol=1e-5,
    )
    np.testing.assert_allclose(np.linalg.norm(np.asarray(d["dense"]["kernel"]), axis=0),
                               np.full(3, 2.0 * np.sqrt(5)), rtol=1e-5)  # fmt: skip
    assert not np.any(np.asarray(d["conv"]["bias"])) and not np.any(np.asarray(d["bn"]["scale"]))
    again = analyze.random_direction(params, jax.random.key(0))
    np.testing.assert_array_equal(x, np.asarray(again["conv"]["kernel"]))  # seeded


def test_landscape_center_is_the_trained_loss(tmp_path_factory, tmp_path):
    run = runs.load_run(str(trained(tmp_path_factory, "lenet")))
    result = analyze.landscape(run, num_images=40, points_1d=5, points_2d=3, span=0.5, seed=1,
                               log=lambda _: None)  # fmt: skip
    info = result["info"]
    assert info["num_images"] == 40 and result["loss_2d"].shape == (3, 3)
    np.testing.assert_allclose(result["alphas"], [-0.5, -0.25, 0, 0.25, 0.5])
    subset = analyze._subset(run.dataset.test, 40, 1)
    probs = runs.predict_probs(run, subset)
    assert info["center_loss"] == pytest.approx(classification.nll(probs, subset.labels), rel=1e-4)
    assert result["loss_1d"][2] == pytest.approx(info["center_loss"], rel=1e-6)
    assert result["loss_2d"][1, 1] == pytest.approx(info["center_loss"], rel=1e-6)
    assert np.all(np.isfinite(result["loss_2d"]))
    files = analyze.save_landscape(result, str(tmp_path)) + analyze.plot_landscape(
        result, str(tmp_path)
    )
    for name in ("landscape.npz", "landscape.json", "landscape_1d.png", "landscape_2d.png"):
        assert str(tmp_path / name) in files and (tmp_path / name).stat().st_size > 0
    assert json.loads((tmp_path / "landscape.json").read_text())["seed"] == 1


@pytest.mark.slow
def test_batchnorm_sweep_records_and_plots(tmp_path):
    results = [
        analyze.bn_sweep(_config(name), lrs=(0.1, 0.05), steps=3, log=lambda _: None)
        for name in ("vgg_a_bn", "vgg_a")
    ]
    with_bn, without = results
    assert with_bn["info"]["batch_norm"] and not without["info"]["batch_norm"]
    for r in results:
        for key in ("loss", "grad_distance", "beta", "lr"):
            assert r[key].shape == (2, 3), key
            assert np.all(np.isfinite(r[key])), key
        assert np.all(r["grad_distance"] > 0) and np.all(r["beta"] > 0)
        # The cosine schedule starts at the peak learning rate of each run.
        np.testing.assert_allclose(r["lr"][:, 0], [0.1, 0.05], rtol=1e-6)
        analyze.save_sweep(r, str(tmp_path))
    # Same init and batches for every learning rate: the first loss is the same.
    assert with_bn["loss"][0, 0] == pytest.approx(with_bn["loss"][1, 0], rel=1e-6)
    loaded = analyze.load_sweeps(str(tmp_path))
    assert [s["info"]["model"] for s in loaded] == ["vgg_a_bn", "vgg_a"]
    path = analyze.plot_sweeps(loaded, str(tmp_path))
    assert (tmp_path / "batchnorm.png").stat().st_size > 0 and path.endswith("batchnorm.png")

    out = run_command("analyze", "batchnorm", "--plot", f"--out={tmp_path}")
    assert out.returncode == 0, out.stderr[-3000:]
    assert "batchnorm.png" in out.stdout


def test_analyze_command_errors(tmp_path):
    out = run_command("analyze", "nothing")
    assert out.returncode == 1 and "give one analysis" in out.stderr
    out = run_command("analyze", "batchnorm", "--plot", f"--out={tmp_path}")
    assert out.returncode == 1 and "no BatchNorm-study data" in out.stderr
    out = run_command("analyze", "landscape", f"--workdir={tmp_path / 'missing'}")
    assert out.returncode == 1 and "does not exist" in out.stderr
    assert "Traceback" not in out.stderr
