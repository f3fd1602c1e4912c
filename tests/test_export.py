"""Export: a trained run's model as a StableHLO (``jax.export``) file and an ONNX file that
give the package's own probabilities on real CIFAR-10 test images, at batch 1 and 37, for
a run with BatchNorm and one with dropout; the StableHLO file runs in a process that
cannot import cifar_jax; a GPU-shaped config (bfloat16, deterministic pools) exports for
CUDA without a CPU kernel.

The trained runs are shared (tests/tiny_runs.py). The first ONNX conversion of the
session imports every jax2onnx plugin (~20 s on 2 busy cores); the rest is seconds.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from tiny_runs import run_command, trained_real

from cifar_jax import inference, runs
from cifar_jax.commands import summary
from cifar_jax.errors import CheckpointError, CifarJaxError, ConfigError
from cifar_jax.kernels import onednn

pytestmark = pytest.mark.slow

BATCHES = (1, 37)


def _need(fmt: str) -> None:
    if fmt == "onnx":
        for module in ("jax2onnx", "onnxruntime"):
            pytest.importorskip(module, reason="ONNX export needs the [export] extra")


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
    """fmt -> path of the run's exported file (written once per run)."""
    folder = tmp_path_factory.mktemp("exported")
    cache: dict[str, str] = {}

    def get(fmt: str) -> str:
        _need(fmt)
        if fmt not in cache:
            cache[fmt] = inference.export(loaded, fmt, str(folder / f"model.{fmt}"))[0]
        return cache[fmt]

    return get


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
        assert (got.argmax(-1) == want.argmax(-1)).all()


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
    np.testing.assert_allclose(np.asarray(exp.call(images)), want, atol=tolerance, rtol=0)
    _need("onnx")
    onnx_path, onnx_facts = inference.export(run, "onnx", str(tmp_path / "gpu.onnx"))
    assert json.loads(open(onnx_facts).read())["compute_dtype"] == "float32"
    got = inference.run_exported(onnx_path, "onnx", images)
    np.testing.assert_allclose(got, want, atol=tolerance, rtol=0)


def test_export_command_writes_and_checks_the_file(bn_run, tmp_path):
    out_file = tmp_path / "m.stablehlo"
    out = run_command(
        "export", f"--workdir={bn_run.workdir}", "--format=stablehlo", f"--out={out_file}"
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert f"Wrote {out_file}" in out.stdout and "Checked: on 8 random images" in out.stdout
    assert json.loads((tmp_path / "m.stablehlo.json").read_text())["platforms"] == ["cpu", "cuda"]
    bad = run_command("export", f"--workdir={bn_run.workdir}", "--format=tflite", "--out=x")
    assert bad.returncode == 1 and "Traceback" not in bad.stderr
    assert "--format='tflite' is not known; use one of stablehlo, onnx" in bad.stderr


def test_a_file_that_disagrees_with_the_package_is_an_error(bn_run, tmp_path, monkeypatch):
    path, _ = inference.export(bn_run, "stablehlo", str(tmp_path / "m.stablehlo"))
    images = inference.check_images()
    assert inference.check_export(bn_run, path, "stablehlo", images) < 1e-6
    real = inference.run_exported
    monkeypatch.setattr(inference, "run_exported", lambda *args: real(*args) + 1e-3)
    with pytest.raises(CifarJaxError, match=r"up to 1.00e-03 away .*not to be trusted"):
        inference.check_export(bn_run, path, "stablehlo", images)


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
