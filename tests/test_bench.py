"""The CPU benchmark: runs end to end on a tiny model; the torch twins match the flax models.

The jax side always runs. The PyTorch side needs ``torch`` (the ``[bench]`` extra); where
it is not installed those checks are skipped, not failed.
"""

import importlib.util
import re

import jax
import jax.numpy as jnp
import pytest

from cifar_jax import config as config_lib
from cifar_jax import models, runtime
from cifar_jax.perf import bench

HAS_TORCH = importlib.util.find_spec("torch") is not None
needs_torch = pytest.mark.skipif(not HAS_TORCH, reason="torch not installed ([bench] extra)")


def tiny_config(**overrides):
    config = config_lib.base_config()
    config.update(
        dict(
            data_source="synthetic",
            synthetic_train_examples=256,
            synthetic_test_examples=64,
            model="lenet",
            optimizer="sgd",
            learning_rate=0.01,
            num_epochs=1,
        )
    )
    config.update(overrides)
    return config


def _flax_params(config, num_classes):
    model = models.build_model(config, num_classes)
    variables = jax.eval_shape(
        lambda: model.init(
            {"params": jax.random.key(0), "dropout": jax.random.key(1)},
            jnp.zeros((1, 32, 32, 3)),
            train=False,
        )
    )
    return model, models.count_trainable_params(variables)


def test_bench_model_runs_on_a_tiny_model():
    records = bench.bench_model(
        tiny_config(), [16], rounds=2, seconds=0.01, steps=2, use_torch=HAS_TORCH
    )
    (r,) = records
    assert r["model"] == "lenet" and r["batch_size"] == 16 and r["params"] == 62_006
    for side in ("train", "eval"):
        assert r[side]["jax_images_per_second"] > 0
        assert len(r[side]["jax_rounds"]) == 2
        if HAS_TORCH:
            assert r[side]["torch_images_per_second"] > 0 and r[side]["ratio"] > 0
    assert r["train_compile_seconds"] > 0
    assert r["train_step_memory_mb"] is None or r["train_step_memory_mb"] > 0
    assert r["pipeline_images_per_second"] > 0
    assert 0 <= r["loop_data_wait_fraction"] < 1 and 0 <= r["loop_next_fraction"] < 1
    report = {
        "command": "python -m cifar_jax bench --models=lenet",
        "started": "t0",
        "finished": "t1",
        "wall_seconds": 1.0,
        "loadavg_before": [0.0, 0.0, 0.0],
        "loadavg_after": [0.0, 0.0, 0.0],
        "machine": runtime.machine_info(),
        "results": records,
    }
    table = bench.markdown(report)
    assert "| lenet | 62,006 | 16 | float32 |" in table
    assert "python -m cifar_jax bench --models=lenet" in table
    # The record and its table name the code they measured (docs/bench/bench.json once
    # had commit null).
    assert report["machine"]["commit"] not in (None, "", "unknown")
    assert f"commit {report['machine']['commit']};" in table


def test_train_loop_counts_the_device_idle_while_data_is_late():
    """``run_train`` counts as waiting the gaps in which no step ran: with batches that
    take 500 ms each and steps of a few ms, nearly all of the 4 gaps between 5 steps.
    (500 ms: on a loaded 2-core machine a tiny step took 70 ms.)"""
    import time

    import numpy as np

    from cifar_jax import data

    config = tiny_config()
    config.batch_size = 16
    rng = np.random.default_rng(0)
    batch = {
        "image": rng.integers(0, 256, (16, 32, 32, 3), dtype=np.uint8),
        "label": rng.integers(0, 10, 16).astype(np.int32),
    }

    def late_batches():
        while True:
            time.sleep(0.5)
            yield batch

    side = bench.JaxSide(config, data.load_dataset(config), late_batches(), [])
    seconds = side.run_train(5)
    assert side.trained == seconds >= 5 * 0.5
    assert side.in_next >= 5 * 0.5
    assert 4 * 0.3 <= side.waited <= seconds


def test_seed_models_are_the_config_files():
    names = bench.seed_models()
    # The 15 report models and the three fast recipes of docs/fast.md; no sweep configs.
    assert len(names) == 18 and "lenet" in names and "sweeps" not in names
    assert {"airbench94", "airbench94_muon", "fast94"} <= set(names)
    assert bench.load_config("resnet").model == "resnet"


@needs_torch
def test_torch_twins_have_the_flax_parameter_counts():
    """Every seed config's torch twin has exactly the flax model's parameter count (and
    bench_torch refuses to build one that does not)."""
    from cifar_jax.perf import bench_torch

    for name in bench.seed_models():
        config = bench.load_config(name)
        num_classes = 100 if config.dataset == "cifar100" else 10
        if config.dataset == "cifar100" and config.label_type == "coarse":
            num_classes = 20
        if config.class_subset:
            num_classes = config.class_subset
        model, count = _flax_params(config, num_classes)
        twin = bench_torch.build_torch_model(model, count)
        assert bench_torch.count_params(twin) == count, name
    model, count = _flax_params(tiny_config(), 10)
    with pytest.raises(AssertionError, match="params"):
        bench_torch.build_torch_model(model, count + 1)


@needs_torch
def test_torch_twin_trains_with_the_config_optimizer():
    import numpy as np

    from cifar_jax.perf import bench_torch

    config = tiny_config(model="basenet_residual", optimizer="adam", learning_rate=1e-3)
    model, count = _flax_params(config, 10)
    runner = bench_torch.TorchRunner(config, model, count, np.full(3, 0.5), np.full(3, 0.5), 1)
    rng = np.random.default_rng(0)
    batch = {
        "image": rng.integers(0, 256, (8, 32, 32, 3), dtype=np.uint8),
        "label": rng.integers(0, 10, 8).astype(np.int32),
    }
    losses = [float(runner.train_step(batch)) for _ in range(15)]
    assert losses[-1] < losses[0]
    assert 0 <= int(runner.eval_step(batch)) <= 8


def test_lever_off_switches_the_lever_and_restores_it():
    from cifar_jax.kernels import fast_ops, levers, onednn
    from cifar_jax.perf import bench_levers

    x = jnp.ones((2, 4, 4, 64))
    assert bench_levers.LEVERS == levers.NAMES

    def jaxpr() -> str:  # a fresh function: jax caches traces whatever the levers are
        return str(jax.make_jaxpr(lambda x: fast_ops.conv_input(x))(x))

    with bench_levers.lever_off("onednn"):  # conv_input only acts before XLA's convs
        assert not onednn.use_onednn(x, x)
        assert levers.current() == levers.Levers(onednn=False)
        on = jaxpr()
        with bench_levers.lever_off("materialize"):
            assert "div" not in jaxpr()
        assert jaxpr() == on
    assert levers.current() == levers.DEFAULT
    assert "div" in on or jax.default_backend() != "cpu"
    with pytest.raises(SystemExit, match="unknown lever"), bench_levers.lever_off("nope"):
        pass


def _program(compiled_text: str) -> str:
    """A compiled HLO module without its source locations (``metadata={...}`` and the
    FileNames / FunctionNames / FileLocations / StackFrames tables): two traces of the
    same program from different lines compare equal."""
    text = re.sub(r", metadata=\{[^}]*\}", "", compiled_text)
    return "\n".join(line for line in text.splitlines() if not re.match(r"\d+ ", line))


def test_lever_ab_runs_on_a_tiny_model(monkeypatch):
    """Both variants of LeNet, and they are different programs: small_conv's tap sum
    replaces its first conv (batch 128) with the lever on, XLA's conv with it off.

    small_conv only acts where XLA's convs run: with oneDNN's (the default on one CPU
    device) the lever is a no-op and both variants compile to the same program. So
    oneDNN is off here (as ``CIFAR_JAX_ONEDNN=0`` or a machine without it), and the
    compiled train steps of the two variants are compared: a lever that silently does
    nothing (not patched at trace time, or never reached) fails this test."""
    from cifar_jax.perf import bench_levers

    compiled = []

    class RecordingSide(bench.JaxSide):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            compiled.append(self.train_step.as_text())

    monkeypatch.setattr(bench, "JaxSide", RecordingSide)
    with bench_levers.lever_off("onednn"):
        r = bench_levers.ab_lever(
            tiny_config(val_examples=0), "small_conv", 128, rounds=1, seconds=0.01, steps=1
        )
    on, off = compiled
    same = _program(on) == _program(off)
    assert not same, "the small_conv lever left the compiled train step unchanged"
    # The tap sum's lax.cond (small_conv: it makes XLA write the sum once) is the only
    # conditional of LeNet's step: there with the lever on, gone with it off.
    assert on.count(" conditional(") == 1 and off.count(" conditional(") == 0
    assert r["on_images_per_second"] > 0 and r["off_images_per_second"] > 0
    assert r["ratio"] == pytest.approx(r["on_images_per_second"] / r["off_images_per_second"])


@pytest.mark.accelerator
def test_conv_timing_covers_each_implementation():
    """On the CPU also where JAX's default is a GPU (scripts/gpu_check.sh runs it there):
    the oneDNN custom call exists for the CPU only."""
    from cifar_jax.kernels import onednn
    from cifar_jax.perf import bench_ops

    r = bench_ops.time_conv((4, 8, 3, 8, 3, 1, 1), repeats=1)
    assert r["device"] == "cpu"
    assert r["shape"] == dict(n=4, size=8, cin=3, cout=8, k=3, s=1, p=1)
    names = ["xla"] + (["onednn"] if onednn.available() else [])
    for name in names:
        for part in ("forward", "fwd_bwd", "input_grad", "kernel_grad"):
            assert r[f"{name}_{part}_ms"] > 0, part
        rate = r["forward_flops"] / 1e9 / (r[f"{name}_forward_ms"] / 1e3)
        assert r[f"{name}_forward_gflop_per_s"] == pytest.approx(rate, rel=0.01, abs=0.1)
    assert ("torch_forward_ms" in r) == (importlib.util.find_spec("torch") is not None)
    # 2 x (4 images x 8 x 8 outputs) x (3 x 8 channels) x 3 x 3 taps.
    assert r["forward_flops"] == 2 * 4 * 8 * 8 * 3 * 8 * 9
    assert r["dtype"] == "float32"
    half = bench_ops.time_conv((4, 8, 3, 8, 3, 1, 1), repeats=1, dtype="bfloat16")
    assert half["dtype"] == "bfloat16" and half["xla_kernel_grad_ms"] > 0
    with pytest.raises(ValueError, match="float32 or bfloat16"):
        bench_ops.time_conv((4, 8, 3, 8, 3, 1, 1), repeats=1, dtype="float16")


def test_train_step_profile_attributes_time_to_ops(tmp_path, monkeypatch):
    """The per-op profile of LeNet's real train step: its convs show up (as oneDNN
    custom calls where those run), and the op times are per step; its trace is not left
    behind in the temp folder (it once was, a folder per profile)."""
    import tempfile

    from cifar_jax.kernels import onednn
    from cifar_jax.perf import bench_ops

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    r = bench_ops.profile_step(tiny_config(val_examples=0), 32, steps=2)
    assert not list(tmp_path.glob("cifar_jax_profile_*"))
    assert r["step_ms"] > 0 and r["images_per_second"] > 0
    kinds = r["op_ms_by_kind"]
    conv_kind = "ffi_call" if onednn.use_onednn(jnp.zeros((32, 8, 8, 8)), jnp.zeros(4)) else "conv"
    assert any(kind.startswith(conv_kind) for kind in kinds), kinds
    assert sum(kinds.values()) < 10 * r["step_ms"]  # summed over threads, per step
    assert r["page_faults_per_step"] >= 0


@needs_torch
def test_profile_can_set_the_torch_twin_beside_the_jax_step():
    from cifar_jax.perf import bench_ops

    r = bench_ops.profile_step(tiny_config(val_examples=0), 32, steps=2, torch_side=True)
    torch_side = r["torch"]
    assert torch_side["step_ms"] > 0
    assert torch_side["images_per_second"] == pytest.approx(32 / torch_side["step_ms"] * 1e3, 0.01)
    assert any("convolution" in op for op in torch_side["op_ms"]), torch_side["op_ms"]
    assert "torch" not in bench_ops.profile_step(tiny_config(val_examples=0), 32, steps=2)


def test_eval_step_profile_runs():
    from cifar_jax.perf import bench_ops

    r = bench_ops.profile_step(tiny_config(val_examples=0), 32, steps=2, step="eval")
    assert r["step"] == "eval" and r["step_ms"] > 0 and r["op_ms_by_kind"]


def test_interleaved_warms_up_both_sides_even_for_heavy_models():
    """Every side runs at least one untimed step before its timed rounds (with the host
    allocator the first steps page-fault the heap in); heavy models: 3 rounds of 1 step."""

    def fake(seconds):
        calls = []

        def run(n):
            calls.append(n)
            return seconds * n

        return run, calls

    for step_seconds, heavy in ((bench.HEAVY_STEP_SECONDS + 1, True), (0.01, False)):
        jax_run, jax_calls = fake(step_seconds)
        torch_run, torch_calls = fake(step_seconds * 1.25)
        r = bench.interleaved(jax_run, torch_run, 8, rounds=5, seconds=0.6, steps=0)
        timed = r["rounds"]
        assert len(jax_calls) > timed and len(torch_calls) > timed  # warm-up steps first
        assert (timed, r["steps_per_round"]) == (3, 1) if heavy else timed == 5
        assert r["ratio"] == pytest.approx(1.25)


@pytest.mark.parametrize(
    "module,argv",
    [
        ("bench_levers", ["--lever=onednn", "--models=lenet"]),
        ("bench_ops", ["profile", "--models=lenet"]),
    ],
)
def test_companion_clis_take_overrides_like_bench(module, argv, monkeypatch, tmp_path):
    """bench_levers and bench_ops build their configs with bench.model_batch_grid, which
    reads ``--override``: each CLI must define it (a missing one was an AttributeError)."""
    import importlib

    cli = importlib.import_module(f"cifar_jax.perf.{module}")
    monkeypatch.setattr(runtime, "configure_process", lambda **kwargs: None)
    with pytest.raises(SystemExit, match="no field 'no_such_field'"):
        cli.main([*argv, "--override=no_such_field=1", f"--out={tmp_path}"])


def test_precisions_bench_each_model_in_each_and_the_table_says_which(monkeypatch, tmp_path):
    """``--precisions=float32,bf16`` runs one worker per model and precision, bf16 with
    half_precision=true (bug caught: the flag ignored, every row float32), and the table
    has a precision column that reads the record (bug caught: two rows of one model that
    the table cannot tell apart)."""
    import json
    import subprocess

    cmds = []
    real_run = subprocess.run

    def fake_run(cmd, **kwargs):
        if "--worker" not in cmd:  # git, for the record's commit
            return real_run(cmd, **kwargs)
        cmds.append(cmd)
        half = "--override=half_precision=true" in cmd
        side = {"jax_images_per_second": 1.0, "torch_images_per_second": 1.0, "ratio": 1.0,
                "ratios": [1.0], "jax_rounds": [1.0], "torch_rounds": [1.0]}  # fmt: skip
        record = {
            "model": "lenet", "params": 62006, "batch_size": 16, "half_precision": half,
            "train": side, "eval": side, "train_compile_seconds": 1.0,
            "train_step_memory_mb": None, "pipeline_images_per_second": 10.0,
            "pipeline_factor": 10.0, "loop_data_wait_fraction": 0.0, "loadavg": [0.0],
        }  # fmt: skip
        return subprocess.CompletedProcess(cmd, 0, stdout=json.dumps([record]) + "\n")

    monkeypatch.setattr(bench.subprocess, "run", fake_run)
    argv = ["--models=lenet", "--batch_sizes=16", "--precisions=float32,bf16", f"--out={tmp_path}"]
    assert bench.main(argv) == 0
    assert [("--override=half_precision=true" in c) for c in cmds] == [False, True]
    # float32 is set, not left to the config (bug caught: configs/fast94.py, which asks for
    # bf16 itself, benched in bf16 under --precisions=float32).
    assert "--override=half_precision=false" in cmds[0]
    table = (tmp_path / "bench.md").read_text()
    assert "| lenet | 62,006 | 16 | float32 |" in table
    assert "| lenet | 62,006 | 16 | bf16 |" in table
    with pytest.raises(SystemExit, match="precisions"):
        bench.main(["--models=lenet", "--precisions=fp8", f"--out={tmp_path}"])
