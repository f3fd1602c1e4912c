"""config.half_precision: bf16 activations and convs, float32 params, optimizer state,
BatchNorm statistics and loss. The bf16 step lowers for CUDA from this CPU-only machine
with no oneDNN call; on CPUs with bf16 hardware (AMX, AVX512_BF16) bf16 convs run through
the oneDNN kernel and equal XLA's up to bf16 rounding; a short LeNet run on real data
learns as well as float32."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
from test_lowering import REPO, load
from tiny_runs import tiny_eval_config

from cifar_jax import config as config_lib
from cifar_jax import kernels, models, optim, parallel, steps, train, validation
from cifar_jax import model_summary as summary
from cifar_jax.errors import ConfigError
from cifar_jax.kernels import fast_ops, onednn

on_cpu = jax.default_backend() == "cpu"
# bf16 on the session's backend: on a GPU host (scripts/gpu_check.sh) the step runs there;
# the oneDNN tests skip themselves off the CPU.
pytestmark = pytest.mark.accelerator


def _conv_operand_types(module: str, kernel_grads: bool = True) -> list[str]:
    """The element types of every convolution's operands in a StableHLO module: XLA's
    ``stablehlo.convolution`` and the oneDNN custom call alike (without its kernel
    gradients, which read float32 copies of the bf16 activations by default, if not
    ``kernel_grads``)."""
    types = []
    for line in module.splitlines():
        if "stablehlo.convolution" in line or f"@{onednn.TARGET_NAME}" in line:
            if not kernel_grads and "mode = 2 " in line:
                continue
            types += _operand_types(line)
    return types


def _operand_types(line: str) -> list[str]:
    """The operands' element types of one op line: ``(tensor<...xT>, ...) -> ...``."""
    operands = line.rsplit(" : ", 1)[-1].split("->")[0]
    return re.findall(r"x(bf16|f32|f16)>", operands)


def _tiny_bf16_step(config, **changes):
    """A tiny c100_bn config in bf16 with ``changes``; its net, optimizer, initial state,
    normalization and one global batch of 16 on the default mesh."""
    config.update(
        dict(model="c100_bn", widths=(8, 16), head_widths=(16,), batch_size=16,
             half_precision=True, **changes)
    )  # fmt: skip
    mesh = parallel.create_mesh()
    net = models.build_model(config, 10)
    tx = optim.create_optimizer(config, 1e-3)
    state = steps.create_train_state(net, tx, 0, NamedSharding(mesh, P()))
    mean, std = np.full(3, 120.0, np.float32), np.full(3, 60.0, np.float32)
    rng = np.random.default_rng(0)
    batch = {
        "image": rng.integers(0, 256, (16, 32, 32, 3), dtype=np.uint8),
        "label": rng.integers(0, 10, 16).astype(np.int32),
    }
    batch = parallel.to_global(batch, NamedSharding(mesh, P("data")))
    return net, tx, state, mean, std, batch, mesh


def test_bf16_train_step_lowers_for_cuda_with_bf16_convs_and_no_onednn_call():
    config = load(REPO / "configs" / "resnet_small.py")
    config.update(dict(widths=(8, 16, 16), stem_width=8, half_precision=True))
    cuda = summary.lower_steps(config, "cuda")["train"]
    assert onednn.TARGET_NAME not in cuda
    types = _conv_operand_types(cuda)
    # The 15 convs, the input gradients of 14 (not the stem's: the images need none) and
    # the kernel gradients of 15, all convolutions on GPU, all bf16.
    assert len(types) >= 2 * (15 + 14 + 15) and set(types) == {"bf16"}, sorted(set(types))
    # The float32 program of the same config has no bf16 conv: the flag is what did it.
    config.half_precision = False
    assert set(_conv_operand_types(summary.lower_steps(config, "cuda")["train"])) == {"f32"}


@pytest.mark.skipif(jax.device_count() != 1, reason="one device")
def test_params_optimizer_state_and_statistics_stay_float32_while_convs_run_in_bf16():
    config = config_lib.base_config()
    net, tx, state, mean, std, batch, mesh = _tiny_bf16_step(config, optimizer="adam")
    train_step, _ = steps.jit_steps(config, net, tx, mean, std, mesh)
    module = train_step.lower(state, batch).as_text()
    types = _conv_operand_types(module, kernel_grads=False)
    assert len(types) >= 2 * 3 and set(types) == {"bf16"}, types  # 2 convs, 1 input grad
    old = jax.device_get(state)
    new, step_metrics = train_step(state, batch)
    for part in ("params", "opt_state", "batch_stats"):
        leaves = [
            x for x in jax.tree.leaves(getattr(new, part)) if jnp.issubdtype(x.dtype, jnp.floating)
        ]
        assert leaves and {x.dtype for x in leaves} == {jnp.dtype(jnp.float32)}, part
    assert step_metrics.loss.total.dtype == jnp.float32
    # It trained: every parameter moved, by updates below bf16's resolution for some
    # (float32 master weights keep them; bf16 params would not have moved at all).
    for a, b in zip(jax.tree.leaves(old.params), jax.tree.leaves(new.params), strict=True):
        assert not np.array_equal(a, np.asarray(b))
    # The batch statistics moved too, towards float32 means of the bf16 activations.
    bn_old, bn_new = old.batch_stats, jax.device_get(new.batch_stats)
    assert not np.array_equal(jax.tree.leaves(bn_old)[0], jax.tree.leaves(bn_new)[0])
    # The logits of the eval form are float32 as well.
    logits = net.apply(jax.device_get(new.variables()), jnp.zeros((2, 32, 32, 3)), train=False)
    assert logits.dtype == jnp.float32


needs_bf16 = pytest.mark.skipif(
    not (on_cpu and onednn.available() and onednn.bf16_available()),
    reason=f"no bf16 convs through oneDNN on this CPU: "
    f"{onednn.bf16_info() if on_cpu else 'not a CPU backend'}",
)

# (in, out, kernel, stride, padding, size): LeNet, strided/odd, 1x1 projection, wide.
SHAPES = [
    (3, 6, 5, 1, 0, 32),
    (6, 16, 5, 1, 0, 14),
    (8, 16, 3, 2, 1, 15),
    (8, 16, 1, 2, 0, 15),
    (64, 64, 3, 1, 1, 8),
]


@needs_bf16
@pytest.mark.parametrize("wgrad", ["f32", "bf16"])
@pytest.mark.parametrize("cin,cout,k,stride,pad,size", SHAPES)
def test_onednn_bf16_conv_equals_f32_xla_conv_up_to_bf16_rounding(
    cin, cout, k, stride, pad, size, wgrad
):
    """Forward and both gradients; the kernel gradient from float32 copies of the bf16
    activations (the default) and from the bf16 activations themselves (bf16 src/diff_dst,
    f32 diff_weights: traced under onednn.bf16_kernel_grads, config.cpu_bf16_kernel_grads)."""
    with onednn.bf16_kernel_grads(wgrad == "bf16"):  # every trace below happens inside
        _check_bf16_conv(cin, cout, k, stride, pad, size, wgrad)


def _check_bf16_conv(cin, cout, k, stride, pad, size, wgrad):
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((4, size, size, cin)), jnp.bfloat16)
    w = jnp.asarray(rng.standard_normal((k, k, cin, cout)) * 0.2, jnp.bfloat16)
    strides, pads = (stride, stride), ((pad, pad), (pad, pad))

    def reference(x, w):  # float32 on the same bf16-rounded values
        return lax.conv_general_dilated(
            x.astype(jnp.float32),
            w.astype(jnp.float32),
            strides,
            pads,
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
        )

    ref = reference(x, w)
    ct = jnp.asarray(rng.standard_normal(ref.shape), jnp.bfloat16)

    def loss(conv):
        return lambda x, w: jnp.sum(conv(x, w).astype(jnp.float32) * ct.astype(jnp.float32))

    def ours(x, w):
        return onednn.conv(x, w, strides, pads)

    hlo = jax.jit(ours).lower(x, w).as_text()
    assert onednn.TARGET_NAME in hlo and "convolution(" not in hlo
    grad_hlo = jax.jit(jax.grad(loss(ours), argnums=(0, 1))).lower(x, w).as_text()
    calls = [line for line in grad_hlo.splitlines() if f"@{onednn.TARGET_NAME}" in line]
    kernel_grad = [line for line in calls if "mode = 2" in line]
    assert len(calls) == 2 and len(kernel_grad) == 1 and "convolution(" not in grad_hlo, calls
    assert re.search(rf"\(tensor<[0-9x]+x{wgrad}>, tensor<[0-9x]+x{wgrad}>\)", kernel_grad[0])
    got = jax.jit(ours)(x, w)
    grads = jax.jit(jax.grad(loss(ours), argnums=(0, 1)))(x, w)
    refs = jax.grad(loss(reference), argnums=(0, 1))(x.astype(jnp.float32), w.astype(jnp.float32))
    assert got.dtype == grads[0].dtype == grads[1].dtype == jnp.bfloat16
    # One bf16 rounding of an f32-accumulated result: within 2^-8 of each value (2^-7 of
    # the largest, for sums that cancel).
    for a, b in ((got, ref), *zip(grads, refs, strict=True)):
        a, b = np.asarray(a, np.float32), np.asarray(b)
        np.testing.assert_allclose(a, b, rtol=2**-8, atol=2**-7 * float(np.max(np.abs(b))))


@needs_bf16
@pytest.mark.skipif(jax.device_count() != 1, reason="one CPU device")
def test_conv_hook_takes_onednn_for_bf16_only_where_supported(monkeypatch):
    x, w = jnp.ones((2, 8, 8, 4), jnp.bfloat16), jnp.ones((3, 3, 4, 5), jnp.bfloat16)
    dn = lax.conv_dimension_numbers(x.shape, w.shape, ("NHWC", "HWIO", "NHWC"))

    def hlo():
        return (
            jax.jit(
                lambda x, w: fast_ops.conv_general_dilated(
                    x, w, (1, 1), ((1, 1), (1, 1)), (1, 1), (1, 1), dimension_numbers=dn
                )
            )
            .lower(x, w)
            .as_text()
        )

    assert onednn.TARGET_NAME in hlo()
    assert onednn.use_onednn(x, w) and not onednn.use_onednn(x, w.astype(jnp.float32))
    monkeypatch.setattr(onednn, "bf16_available", lambda: False)
    assert onednn.TARGET_NAME not in hlo() and "convolution(" in hlo()
    assert onednn.use_onednn(x.astype(jnp.float32), w.astype(jnp.float32))  # f32 unchanged


_NO_BF16_ISA = """
import jax.numpy as jnp
from cifar_jax.kernels import onednn
x = jnp.ones((2, 8, 8, 4), jnp.bfloat16)
print(onednn.available(), onednn.bf16_available(), onednn.use_onednn(x, x),
      onednn.use_onednn(x.astype(jnp.float32), x.astype(jnp.float32)))
print(onednn.half_precision_note(False))
"""


@needs_bf16
def test_the_note_names_the_kernel_gradients_source():
    """Runs record it (results.json "half_precision"): bf16 kernel gradients are a
    different computation, and on a shared 2-core machine a different speed. The machine
    record of a benchmark names the convs' ISA only: its rows carry their configs."""
    from cifar_jax import runtime

    assert "kernel gradients from bf16 activations" in onednn.half_precision_note(True)[0]
    assert "kernel gradients from float32 copies" in onednn.half_precision_note(False)[0]
    machine = runtime.machine_info()["bf16_convs"]
    assert machine.startswith("bfloat16 convs through oneDNN") and "kernel" not in machine


@needs_bf16
@pytest.mark.skipif(jax.device_count() != 1, reason="one device")
def test_the_config_field_chooses_the_kernel_gradients_of_the_run_step():
    """config.cpu_bf16_kernel_grads reaches the train step steps.jit_steps builds (what
    training and the benchmarks run): its oneDNN kernel gradients read bf16 activations
    with it and float32 copies without; the step trains either way."""
    config = config_lib.base_config()
    net, tx, state, mean, std, batch, mesh = _tiny_bf16_step(config)
    losses = {}
    for on, dtype in ((False, "f32"), (True, "bf16")):
        config.cpu_bf16_kernel_grads = on
        train_step, _ = steps.jit_steps(config, net, tx, mean, std, mesh)
        module = train_step.lower(state, batch).as_text()
        kernel_grads = [
            line for line in module.splitlines()
            if f"@{onednn.TARGET_NAME}" in line and "mode = 2 " in line
        ]  # fmt: skip
        assert len(kernel_grads) == 2, kernel_grads  # the two convs'
        operands = [_operand_types(line) for line in kernel_grads]
        assert all(types == [dtype, dtype] for types in operands), (on, operands)
        _, step_metrics = train_step(jax.tree.map(jnp.copy, state), batch)
        losses[on] = float(step_metrics.loss.total)
    # The same forward pass: the loss (computed before any update) is the same.
    assert np.isfinite(losses[True]) and losses[True] == losses[False], losses


def test_bf16_kernel_grads_without_half_precision_is_a_config_error():
    config = config_lib.base_config()
    config.cpu_bf16_kernel_grads = True
    with pytest.raises(ConfigError, match="half_precision=True"):
        validation.validate_config(config)
    config.half_precision = True
    validation.validate_config(config)


@pytest.mark.skipif(not on_cpu or not onednn.available(), reason="needs the oneDNN kernel")
def test_a_cpu_without_bf16_keeps_bf16_convs_on_xla_and_says_it_is_slow():
    """ONEDNN_MAX_CPU_ISA=AVX2 makes this CPU look like an AVX2-only one (AMD Zen 3)."""
    env = dict(os.environ, ONEDNN_MAX_CPU_ISA="AVX2", JAX_PLATFORMS="cpu")
    out = subprocess.run(
        [sys.executable, "-c", _NO_BF16_ISA], env=env, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-2000:]
    flags, note = out.stdout.strip().splitlines()[-2:]
    assert flags.split() == ["True", "False", "False", "True"]
    assert "no bf16 arithmetic" in note and "SLOWER than float32" in note and "True" in note


def _lenet_run(tmp_path, data_root, half_precision: bool) -> dict:
    config = config_lib.base_config()
    config.update(
        dict(
            data_dir=str(data_root / "cifar10"),
            data_source="files",
            model="lenet",
            max_train_examples=6000,
            num_epochs=3,
            batch_size=64,
            eval_batch_size=1000,
            optimizer="adam",
            learning_rate=2e-3,
            schedule="cosine",
            random_crop_padding=0,
            log_every_steps=1000,
            half_precision=half_precision,
        )
    )
    name = "bf16" if half_precision else "f32"
    return train.train_and_evaluate(config, str(tmp_path / name))


@pytest.mark.slow
def test_lenet_with_half_precision_learns_as_well_as_float32(tmp_path, real_data_root):
    """Same data order, init and schedule: the bf16 run's test accuracy (10k real test
    images) is within 2 points of the float32 run's, and both learned (chance is 10%)."""
    f32_run = _lenet_run(tmp_path, real_data_root, half_precision=False)
    bf16_run = _lenet_run(tmp_path, real_data_root, half_precision=True)
    # results.json says what ran the bf16 convs (and nothing for a float32 run).
    assert f32_run["half_precision"] is None and f32_run["convolutions"]
    assert bf16_run["half_precision"].startswith("bfloat16"), bf16_run["half_precision"]
    f32, bf16 = f32_run["test_accuracy"], bf16_run["test_accuracy"]
    assert f32 > 0.35, f32
    assert abs(bf16 - f32) <= 0.02, (bf16, f32)


@pytest.mark.parametrize(
    "probe, amx",
    [
        ((True, "ISA avx512_core_amx; brgconv:avx512_core_amx"), True),
        ((True, "ISA avx512_core_fp16; brgconv:avx512_core_bf16"), False),  # AVX512_BF16
        ((False, "oneDNN unavailable: no compiler"), False),
    ],
)
def test_the_fallback_keeps_bf16_on_amx_and_on_gpus_only(monkeypatch, probe, amx):
    """Bug caught: a fallback keyed on bf16_available(), which AVX512_BF16 alone passes,
    would keep bf16 on the CPUs where it is slower than float32 (docs/fast.md)."""
    monkeypatch.setattr(onednn, "_bf16_support", lambda: probe)
    assert onednn.bf16_on_amx() is amx
    reason = onednn.half_precision_fallback_reason("cpu")
    assert (reason is None) is amx
    if reason:
        assert probe[1] in reason and "slower than float32" in reason
    assert onednn.half_precision_fallback_reason("gpu") is None


def _fallback_config(**changes):
    return tiny_eval_config(
        half_precision=True, half_precision_fallback=True, cpu_bf16_kernel_grads=True, **changes
    )


def test_a_fallback_run_is_the_float32_run_and_says_why(tmp_path, monkeypatch):
    """On a CPU without AMX (the probe's answer faked: CI may draw an AMX machine) a
    half_precision_fallback run trains the float32 program, bit for bit, and its log
    record, results.json and config.json say it fell back. Bugs caught: the saved config
    changed but the step still built in bf16 (the state would differ), or a run that fell
    back recording nothing of why."""
    monkeypatch.setattr(kernels, "half_precision_fallback_reason", lambda platform: "no AMX")
    f32 = train.train_and_evaluate(tiny_eval_config(), str(tmp_path / "f32"))
    fell_back = train.train_and_evaluate(_fallback_config(), str(tmp_path / "fallback"))
    assert fell_back["state_sha256"] == f32["state_sha256"]
    assert fell_back["half_precision"] is None and f32["half_precision_fallback"] is None
    assert fell_back["half_precision_fallback"] == "no AMX"
    saved = json.loads((tmp_path / "fallback" / "config.json").read_text())
    assert saved["half_precision"] is False and saved["half_precision_fallback"] is True
    assert saved["cpu_bf16_kernel_grads"] is False
    # Where bf16 is kept, the run is the bf16 run (its results say what ran the convs).
    monkeypatch.setattr(kernels, "half_precision_fallback_reason", lambda platform: None)
    kept = train.train_and_evaluate(_fallback_config(), str(tmp_path / "kept"))
    assert kept["half_precision"].startswith("bfloat16") and kept["half_precision_fallback"] is None


def test_a_resumed_fallback_run_keeps_the_precision_it_started_with(tmp_path, monkeypatch):
    """The precision is decided when a run starts: resumed on a machine that decides the
    other way, it keeps what its config.json records. Bug caught: a run started in bf16
    on an AMX machine and resumed without AMX (or the reverse) would switch precision
    halfway with nothing recorded."""
    config = _fallback_config()
    for started_in_bf16, here in ((True, "no AMX"), (False, None)):
        monkeypatch.setattr(
            kernels, "half_precision_fallback_reason", lambda platform, here=here: here
        )
        fresh, why = train.resolve_precision(config, str(tmp_path / "new"))
        assert fresh.half_precision is (here is None) and why == here  # a new run: this machine
        workdir = tmp_path / f"started_bf16_{started_in_bf16}"
        workdir.mkdir()
        recorded = dict(config.to_dict(), half_precision=started_in_bf16)
        (workdir / "config.json").write_text(json.dumps(recorded))
        resumed, why = train.resolve_precision(config, str(workdir))
        assert resumed.half_precision is started_in_bf16
        assert (why is None) is started_in_bf16
    assert config.half_precision is True  # the caller's config is not changed
