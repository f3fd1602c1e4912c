"""The predict command: image files in, top-k classes out, same numbers as evaluate."""

import json

import numpy as np
import pytest
from PIL import Image
from tiny_runs import run_command, trained

from cifar_jax import evaluation as evaluate
from cifar_jax import runs
from cifar_jax.commands import predict
from cifar_jax.errors import CifarJaxError


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return trained(tmp_path_factory, "lenet")


@pytest.fixture(scope="module")
def loaded(workdir):
    return runs.load_run(str(workdir))


def test_predict_command_matches_the_evaluate_path(workdir, loaded, tmp_path):
    probs, labels = evaluate.predictions(loaded, "test", "none", cache=False)
    picks = [3, 50]
    paths = []
    for i in picks:
        path = tmp_path / f"test_{i}.png"
        Image.fromarray(loaded.dataset.test.images[i]).save(path)
        paths.append(str(path))
    out = run_command("predict", f"--workdir={workdir}", "--json", "--top_k=3", *paths)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout)
    assert result["step"] == loaded.step and result["tta"] == "none"
    for i, pred in zip(picks, result["predictions"], strict=True):
        top = pred["top_k"]
        assert len(top) == 3 and pred["size"] == [32, 32]
        assert top[0]["index"] == int(probs[i].argmax())
        assert top[0]["class"] == loaded.class_names[top[0]["index"]]
        for t in top:
            assert t["probability"] == pytest.approx(float(probs[i, t["index"]]), abs=1e-5)
        assert [t["probability"] for t in top] == sorted(
            (t["probability"] for t in top), reverse=True
        )


def test_any_size_and_mode_is_resized_to_32x32_rgb(loaded, tmp_path):
    big = tmp_path / "big.png"
    Image.fromarray(np.full((48, 64, 4), 200, np.uint8), "RGBA").save(big)
    gray = tmp_path / "gray.jpg"
    Image.fromarray(np.full((20, 20), 90, np.uint8), "L").save(gray)
    image, size = predict.load_image(str(big))
    assert image.shape == (32, 32, 3) and image.dtype == np.uint8 and size == (64, 48)
    result = predict.predict_images(loaded, [str(big), str(gray)], top_k=50)
    assert [len(p["top_k"]) for p in result["predictions"]] == [10, 10]  # capped at classes
    total = sum(t["probability"] for t in result["predictions"][0]["top_k"])
    assert total == pytest.approx(1.0, abs=1e-5)
    text = predict.format_text(result)
    assert "big.png (64x48):" in text and "  1. class_" in text


def test_bad_images_are_clear_errors(workdir, tmp_path):
    with pytest.raises(CifarJaxError, match="does not exist"):
        predict.load_image(str(tmp_path / "none.png"))
    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    with pytest.raises(CifarJaxError, match="cannot read image"):
        predict.load_image(str(bad))
    out = run_command("predict", f"--workdir={workdir}", str(bad))
    assert out.returncode == 1
    assert "cannot read image" in out.stderr and "Traceback" not in out.stderr
