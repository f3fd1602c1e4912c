"""Export: a trained run's model as a StableHLO (``jax.export``) file and an ONNX file that
give the package's own probabilities on real CIFAR-10 test images, at batch 1 and 37, for
a run with BatchNorm and one with dropout, and classify the whole real CIFAR-10 test split
with exactly the accuracy the run recorded; the StableHLO file runs in a process that
cannot import cifar_jax; a GPU-shaped config (bfloat16, deterministic pools) exports for
CUDA without a CPU kernel. The export check compares log-probabilities relatively (a
saturated softmax hides nothing), on the run's real test images or the ones shipped in the
package, and a file that fails it never reaches ``--out``.

The trained runs are shared (tests/tiny_runs.py). The first ONNX conversion of the
session imports every jax2onnx plugin (~20 s on 2 busy cores); the rest is seconds.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from tiny_runs import run_command, trained_real

from cifar_jax import inference, runs
from cifar_jax import model_summary as summary
from cifar_jax.errors import CheckpointError, CifarJaxError, ConfigError
from cifar_jax.inference import export_check, exporting
from cifar_jax.kernels import onednn

pytestmark = pytest.mark.slow

BATCHES = (1, 37)


def _need(fmt: str) -> None:
    if fmt == "onnx":
        for module in ("jax2onnx", "onnxruntime"):
            pytest.importorskip(module, reason="ONNX export needs the [export] extra")
        try:
            exporting._import_onnx()
        except CifarJaxError as e:  # jax2onnx 0.13 on jax >= 0.11 (Python 3.12+)
            pytest.skip(str(e))


@pytest.fixture(scope="module", params=["real_bn", "real_dropout"])
def loaded(request, tmp_path_factory, real_data_root):
    workdir = trained_real(tmp_path_factory, real_data_root, request.param)
    return runs.load_run(str(workdir))


@pytest.fixture(scope="module")
def bn_run(tmp_path_factory, real_data_root):
    """The BatchNorm run alone, for the checks that are the same for every run."""
    return runs.load_run(str(trained_real(tmp_path_factory, real_data_root, "real_bn")))


@pytest.fixture(scope="module")
def images(loaded):
    """The first 37 images of the real CIFAR-10 test split, read by the package's loader."""
    return loaded.dataset.test.images[: max(BATCHES)]


@pytest.fixture(scope="module")
def exported(loaded, tmp_path_factory):
    """fmt -> path of the run's exported file (written once per run, as the command
    writes it: checked on the run's first 256 test images before it reaches its path)."""
    folder = tmp_path_factory.mktemp("exported")
    cache: dict[str, str] = {}

    def get(fmt: str) -> str:
        _need(fmt)
        if fmt not in cache:
            path, _, check = inference.export_checked(loaded, fmt, str(folder / f"model.{fmt}"))
            assert check.count == inference.CHECK_IMAGES and "run's test split" in check.images
            cache[fmt] = path
        return cache[fmt]

    return get


def _test_batch(real_data_root) -> tuple[np.ndarray, np.ndarray]:
    """(images, labels) of the official CIFAR-10 test_batch.bin, read here with numpy."""
    path = real_data_root / "cifar10" / "cifar-10-batches-bin" / "test_batch.bin"
    records = np.fromfile(path, np.uint8).reshape(-1, 1 + 32 * 32 * 3)
    return records[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), records[:, 0]


def test_the_runs_are_what_the_tests_claim(loaded):
    if loaded.config.model == "c100_bn":
        assert loaded.state.batch_stats, "a BatchNorm run keeps running statistics"
    else:
        assert not loaded.state.batch_stats and loaded.config.dropout_rate > 0
    assert loaded.class_names[:2] == ("airplane", "automobile")  # real CIFAR-10 names


@pytest.mark.parametrize("fmt", inference.FORMATS)
def test_exported_file_gives_the_packages_probabilities(loaded, images, exported, fmt):
    path = exported(fmt)
    for n in BATCHES:
        want = loaded.predict(images[:n]).probs
        got = inference.run_exported(path, fmt, images[:n])
        assert got.shape == (n, 10) and got.dtype == np.float32
        np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)
        relative = inference.relative_log_prob_difference(got, want)
        assert relative.max() <= inference.CHECK_TOLERANCE["float32"]
        assert (got.argmax(-1) == want.argmax(-1)).all()


@pytest.mark.parametrize("fmt", inference.FORMATS)
def test_exported_file_classifies_the_test_split_with_the_runs_accuracy(
    loaded, exported, fmt, real_data_root
):
    """The file's top class on every image of the run's test split (the real CIFAR-10
    test batch, 10,000 images, as the run read and evaluated it) is right exactly as often
    as the run's recorded test_accuracy says, counted in images.

    Exact, not within a tolerance: the run evaluated these weights (its final state, which
    the latest checkpoint holds; same state_sha256) in float32, and so does the file, so the
    two differ only by the order XLA's and oneDNN's convolutions sum in (log-probabilities
    within ~3e-7 of their range), far below the smallest top-2 gap of 10,000 images (~1e-4
    on these runs). A bfloat16 run could not be held to this: its ONNX file computes in
    float32.
    """
    results = loaded.results
    assert results["tested_checkpoint"] == "final" and not loaded.config.half_precision
    assert loaded.state_sha256() == results["state_sha256"]  # the weights the run tested
    test = loaded.dataset.test
    n = results["test_examples"]
    assert len(test) == n == 10_000
    images, labels = _test_batch(real_data_root)  # the official test batch, image for image
    assert np.array_equal(test.images, images) and np.array_equal(test.labels, labels)
    path = exported(fmt)
    probs = np.concatenate(
        [inference.run_exported(path, fmt, test.images[i : i + 2500]) for i in range(0, n, 2500)]
    )
    assert probs.shape == (n, 10)
    correct = int((probs.argmax(-1) == test.labels).sum())
    assert correct == round(results["test_accuracy"] * n), (correct, results["test_accuracy"])


def test_stablehlo_file_runs_without_the_package(loaded, images, exported, tmp_path):
    """jax.export.deserialize in a process where importing cifar_jax fails."""
    np.save(tmp_path / "images.npy", images)
    script = f"""
import sys
class NoPackage:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "cifar_jax":
            raise ImportError("cifar_jax is blocked in this process")
sys.meta_path.insert(0, NoPackage())
import numpy as np, jax
with open({exported("stablehlo")!r}, "rb") as f:
    exp = jax.export.deserialize(bytearray(f.read()))
assert exp.platforms == ("cpu", "cuda"), exp.platforms
assert str(exp.in_avals[0]) == "uint8[b,32,32,3]", exp.in_avals
images = np.load({str(tmp_path / "images.npy")!r})
for n in {BATCHES}:
    np.save({str(tmp_path)!r} + f"/probs_{{n}}.npy", np.asarray(exp.call(images[:n])))
assert not any(m.startswith("cifar_jax") for m in sys.modules)
"""
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-3000:]
    for n in BATCHES:
        got = np.load(tmp_path / f"probs_{n}.npy")
        np.testing.assert_allclose(got, loaded.predict(images[:n]).probs, atol=1e-4, rtol=0)


def test_onnx_file_has_a_dynamic_batch_and_carries_its_facts(loaded, exported):
    path = exported("onnx")
    import onnx

    model = onnx.load(path)
    (given,), (out,) = model.graph.input, model.graph.output
    assert given.name == "images" and out.name == "probabilities"
    assert given.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    dims = given.type.tensor_type.shape.dim
    assert dims[0].dim_param == "batch" and [d.dim_value for d in dims[1:]] == [32, 32, 3]
    meta = {p.key: json.loads(p.value) for p in model.metadata_props}
    assert meta["class_names"] == list(loaded.class_names)
    assert meta["state_sha256"] == loaded.state_sha256()
    # Nothing but standard ONNX ops (no custom domain, e.g. no leftover custom call).
    assert {node.domain for node in model.graph.node} <= {""}
    facts = json.loads(open(path + ".json").read())
    assert facts["format"] == "onnx" and facts["step"] == loaded.step
    assert facts["normalization_inside"]["mean"] == pytest.approx(list(loaded.mean))


def test_gpu_shaped_config_exports_for_cuda_without_cpu_kernels(bn_run, tmp_path):
    """The run's weights under its config made GPU-shaped (bfloat16 compute, deterministic
    pools, as scripts/gpu_check.sh trains): the StableHLO file is lowered for CUDA too,
    holds no oneDNN call, computes in bf16, and its CPU part agrees with the package."""
    config = runs.read_config(bn_run.workdir)
    config.half_precision, config.deterministic = True, True
    run = runs.load_run(bn_run.workdir, config=config)
    images = bn_run.dataset.test.images[: max(BATCHES)]
    path, facts_path = inference.export(run, "stablehlo", str(tmp_path / "gpu.stablehlo"))
    import jax

    with open(path, "rb") as f:
        exp = jax.export.deserialize(bytearray(f.read()))
    assert "cuda" in exp.platforms
    module = exp.mlir_module()
    assert onednn.TARGET_NAME not in module
    assert summary.custom_calls(module) == ["shape_assertion"]  # the symbolic batch's check
    assert "xbf16" in module  # the convolutions compute in bfloat16
    assert json.loads(open(facts_path).read())["compute_dtype"] == "bfloat16"
    tolerance = inference.CHECK_TOLERANCE["bfloat16"]
    want = run.predict(images).probs
    got = np.asarray(exp.call(images))
    assert inference.relative_log_prob_difference(got, want).max() <= tolerance
    _need("onnx")
    onnx_path, onnx_facts = inference.export(run, "onnx", str(tmp_path / "gpu.onnx"))
    assert json.loads(open(onnx_facts).read())["compute_dtype"] == "float32"
    got = inference.run_exported(onnx_path, "onnx", images)
    assert inference.relative_log_prob_difference(got, want).max() <= tolerance


def test_export_command_writes_and_checks_the_file(bn_run, tmp_path):
    out_file = tmp_path / "m.stablehlo"
    out = run_command(
        "export", f"--workdir={bn_run.workdir}", "--format=stablehlo", f"--out={out_file}"
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert f"Wrote {out_file}" in out.stdout
    source = bn_run.dataset.source
    assert (
        f"Checked: on 256 images (the first 256 images of the run's test split, {source}) "
        "the file's log-probabilities are within "
    ) in out.stdout, out.stdout
    assert "relative to each image's range of log-probabilities (allowed 0.0001)" in out.stdout
    facts = json.loads((tmp_path / "m.stablehlo.json").read_text())
    assert facts["platforms"] == ["cpu", "cuda"]
    assert facts["check"]["count"] == 256 and facts["check"]["max_relative_difference"] < 1e-5
    assert sorted(os.listdir(tmp_path)) == ["m.stablehlo", "m.stablehlo.json"]  # no temporaries
    bad = run_command("export", f"--workdir={bn_run.workdir}", "--format=tflite", "--out=x")
    assert bad.returncode == 1 and "Traceback" not in bad.stderr
    assert "--format='tflite' is not known; use one of stablehlo, onnx" in bad.stderr


def test_the_check_compares_log_probabilities_relatively():
    """A logit 5 too high on a class the softmax gives ~1e-9 moves no probability by more
    than 1e-6, so |p_file - p_package| < 1e-4 passes it; in log space it is 5 of a range
    of 35, far over any tolerance."""
    want_logits = np.array([[30.0, 10.0, 0.0, -5.0], [2.0, 1.0, 0.5, 0.0]], np.float32)
    got_logits = want_logits + np.array([[0, 5, 0, 0], [0, 0, 0, 0]], np.float32)

    def softmax(x):
        e = np.exp(x - x.max(-1, keepdims=True))
        return (e / e.sum(-1, keepdims=True)).astype(np.float32)

    want, got = softmax(want_logits), softmax(got_logits)
    assert np.abs(got - want).max() < 1e-6  # what an absolute check on probabilities sees
    diff = inference.relative_log_prob_difference(got, want)
    assert diff[0] == pytest.approx(5 / 35, rel=1e-3) and diff[1] == 0
    assert diff[0] > inference.CHECK_TOLERANCE["bfloat16"] > inference.CHECK_TOLERANCE["float32"]
    # Probabilities that underflow in both (one runtime flushing a denormal to zero, the
    # other not) agree; a NaN never does.
    tiny = np.array([[1.0, 0.0]], np.float32)
    assert inference.relative_log_prob_difference(tiny + [[0, 1e-44]], tiny)[0] == 0
    assert np.isnan(inference.relative_log_prob_difference([[np.nan, 1.0]], tiny)[0])


def test_the_check_runs_on_the_runs_test_images_or_the_shipped_ones(
    bn_run, tmp_path, monkeypatch, real_data_root
):
    """Real CIFAR images: the first 256 of the run's test split where its data set can be
    read (never downloaded); else the 30 CIFAR-10 test images shipped in the package,
    which are the official test_batch.bin's records they name."""
    images = inference.check_images(bn_run)
    test = bn_run.dataset.test
    assert len(images) == 256 and np.array_equal(images.images, test.images[:256])
    assert images.description == (
        f"the first 256 images of the run's test split, {bn_run.dataset.source}"
    )
    assert len(inference.check_images(bn_run, num=20_000)) == 10_000
    empty = tmp_path / "no_data"
    empty.mkdir()
    config = runs.read_config(bn_run.workdir)
    config.data_source = "auto"  # would download; the check must not
    moved = runs.load_run(bn_run.workdir, data_dir=str(empty), config=config)
    shipped = inference.check_images(moved)
    assert len(shipped) == 30 and shipped.images.dtype == np.uint8
    assert shipped.description.startswith(
        "the 30 real CIFAR-10 test images shipped with cifar_jax, the first 3 of each class of "
        f"test_batch.bin; the run's test split cannot be read: no CIFAR-10 data found under {empty}"
    ), shipped.description
    assert os.listdir(empty) == []  # nothing downloaded
    official, labels = _test_batch(real_data_root)
    with np.load(inference.SHIPPED_CHECK_IMAGES) as f:
        indices, shipped_labels = f["indices"], f["labels"]
    assert np.array_equal(shipped.images, official[indices])
    assert np.array_equal(shipped_labels, labels[indices])
    assert np.bincount(shipped_labels, minlength=10).tolist() == [3] * 10
    assert os.path.getsize(inference.SHIPPED_CHECK_IMAGES) < 100_000
    config = runs.read_config(bn_run.workdir)
    config.data_source = "synthetic"
    synthetic = runs.load_run(bn_run.workdir, config=config)
    assert "the run trained on synthetic images" in inference.check_images(synthetic).description
    monkeypatch.setattr(export_check, "SHIPPED_CHECK_IMAGES", str(tmp_path / "gone.npz"))
    with pytest.raises(
        inference.ExportCheckError,
        match=r"cannot check the export: the run's test split cannot be read: no CIFAR-10 data "
        r".*shipped with cifar_jax .*gone.npz\) cannot be read .*--data_dir=.*--nocheck",
    ):
        inference.check_images(moved)


def test_a_file_that_disagrees_with_the_package_is_an_error(bn_run, tmp_path, monkeypatch):
    """A file whose least probable class has a logit 0.001 too high fails the check (its
    probability, at most 0.1, moves by under 1e-4: the old absolute check passed it), and a
    file that fails it never reaches --out: nothing is left there, or the previous export
    stays byte for byte, and no temporary file is left beside it."""
    images = inference.check_images(bn_run)
    out = tmp_path / "m.stablehlo"
    path, facts_path, check = inference.export_checked(bn_run, "stablehlo", str(out), images)
    assert (path, facts_path) == (str(out), f"{out}.json")
    assert check.count == 256 and check.max_relative_difference < 1e-5
    assert json.loads(open(facts_path).read())["check"] == check.to_json()
    previous = {name: (tmp_path / name).read_bytes() for name in os.listdir(tmp_path)}
    assert sorted(previous) == ["m.stablehlo", "m.stablehlo.json"]

    real = inference.run_exported

    def least_logit_too_high(*args):
        logits = inference.log_probs(real(*args))
        logits += 1e-3 * (np.arange(10) == logits.argmin(-1)[:, None])
        e = np.exp(logits - logits.max(-1, keepdims=True))
        return (e / e.sum(-1, keepdims=True)).astype(np.float32)

    monkeypatch.setattr(export_check, "run_exported", least_logit_too_high)
    moved = least_logit_too_high(path, "stablehlo", images.images)
    assert np.abs(moved - real(path, "stablehlo", images.images)).max() < 1e-4  # hidden in |dp|
    with pytest.raises(
        inference.ExportCheckError,
        match=r"the exported stablehlo file .* gives log-probabilities up to \d\.\d+e-04 of an "
        r"image's range .*allowed 0.0001; worst: image \d+ of 256, the first 256 images of "
        r"the run's test split.*not to be trusted",
    ):
        inference.check_export(bn_run, path, "stablehlo", images)
    # A previous export at --out stays, byte for byte.
    with pytest.raises(
        inference.ExportCheckError,
        match=rf"the stablehlo export of {bn_run.workdir} gives log-probabilities up to "
        rf".* {out} is not written \(the file there is left as it was\)",
    ):
        inference.export_checked(bn_run, "stablehlo", str(out), images)
    assert {n: (tmp_path / n).read_bytes() for n in os.listdir(tmp_path)} == previous
    # Nothing at --out: nothing written, no temporary left.
    fresh = tmp_path / "fresh" / "m.onnx"
    with pytest.raises(inference.ExportCheckError, match=r"is not written \(nothing is there\)"):
        inference.export_checked(bn_run, "stablehlo", str(fresh), images)
    assert os.listdir(fresh.parent) == []
    # A NaN is a difference too.
    monkeypatch.setattr(export_check, "run_exported", lambda *args: real(*args) * np.nan)
    with pytest.raises(CifarJaxError, match="up to nan"):
        inference.check_export(bn_run, path, "stablehlo", images)
    # Unchecked exports (--nocheck) are written directly, and say so.
    unchecked = inference.export(bn_run, "stablehlo", str(tmp_path / "u.stablehlo"))[1]
    assert json.loads(open(unchecked).read())["check"] is None


def test_bad_export_requests_are_clear_errors(bn_run, tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="'tflite' is not known"):
        inference.export(bn_run, "tflite", str(tmp_path / "m"))
    with pytest.raises(ConfigError, match="is a folder"):
        inference.export(bn_run, "stablehlo", str(tmp_path))
    with pytest.raises(ConfigError, match="cannot export for platforms .*'gpu'"):
        inference.export(bn_run, "stablehlo", str(tmp_path / "m"), platforms=["gpu"])
    empty = tmp_path / "no_checkpoints"
    empty.mkdir()
    (empty / "config.json").write_text(open(f"{bn_run.workdir}/config.json").read())
    with pytest.raises(CheckpointError, match="no checkpoint in"):
        runs.load_run(str(empty))
    out = run_command("export", f"--workdir={empty}", "--format=onnx", f"--out={tmp_path}/m")
    assert out.returncode == 1 and "error: no checkpoint in" in out.stderr
    monkeypatch.setitem(sys.modules, "jax2onnx", None)  # as if the extra were not installed
    with pytest.raises(CifarJaxError, match=r"needs jax2onnx .*pip install -e '.\[export\]'"):
        inference.export(bn_run, "onnx", str(tmp_path / "m.onnx"))


def test_onnx_export_on_a_jax_its_converter_cannot_trace_is_a_clear_error():
    """jax2onnx 0.13 under jax 0.11 (Python 3.12) failed with a TypeError from inside the
    converter; the export says which versions work and what to do instead."""
    exporting._check_converter_supports_jax("0.13.0", "0.10.2")  # CI's: fine
    exporting._check_converter_supports_jax("0.17.1", "0.11.2")  # a newer converter: tried
    with pytest.raises(CifarJaxError, match=r"jax2onnx 0.13.0 .* jax 0.11.2: it needs jax 0.10"):
        exporting._check_converter_supports_jax("0.13.0", "0.11.2")
