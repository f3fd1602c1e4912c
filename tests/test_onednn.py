"""The oneDNN convolution (XLA FFI custom call): built here, equal to XLA's convolution in
values and gradients on every seed-model shape, used by the conv hook only on a single CPU
device, and a clear fallback when it cannot be built."""

import importlib.metadata
import os
import platform
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax
from model_grads import narrow_model, train_loss_and_grads

from cifar_jax.kernels import fast_ops, levers, onednn

SUPPORTED = sys.platform == "linux" and platform.machine() == "x86_64"
on_cpu = jax.default_backend() == "cpu"
# Skipped where the kernel is not there, saying why: off x86-64 Linux, with
# CIFAR_JAX_ONEDNN=0, or without the oneDNN wheels (the GPU image, a `--no-deps` install).
# test_onednn_is_there_where_it_should_be fails where the wheels are installed (or the
# installed package declares them) and the kernel still is not there, so a CI that loses
# oneDNN fails instead of skipping these tests.
needs_onednn = pytest.mark.skipif(
    not onednn.available(), reason=f"oneDNN unavailable: {onednn.unavailable_reason()}"
)
ONEDNN_WHEELS = ("onednn-cpu-gomp", "onednn-devel-cpu-gomp")


def _installed(dist: str) -> bool:
    try:
        importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def _declared_here() -> list[str]:
    """The oneDNN wheels the installed cifar_jax requires on this platform (none where it
    runs from a checkout without being installed)."""
    from packaging.requirements import Requirement

    try:
        requires = importlib.metadata.requires("cifar_jax") or []
    except importlib.metadata.PackageNotFoundError:
        return []
    reqs = [Requirement(r) for r in requires]
    return [
        r.name
        for r in reqs
        if r.name in ONEDNN_WHEELS and (r.marker is None or r.marker.evaluate({"extra": ""}))
    ]


def onednn_expected() -> str:
    """Why oneDNN should be available here ('' where it need not be)."""
    if not SUPPORTED or os.environ.get("CIFAR_JAX_ONEDNN", "1") == "0":
        return ""
    installed = [d for d in ONEDNN_WHEELS if _installed(d)]
    if installed:
        return f"the oneDNN wheels are installed ({', '.join(installed)})"
    declared = _declared_here()
    if declared:
        return f"the installed cifar_jax requires {', '.join(declared)} on this platform"
    return ""


# (in_channels, out_channels, kernel, stride, padding, size): every conv shape of the seed
# models (narrowed), odd sizes, and maps smaller than the kernel (VGG's 2x2 stage).
SHAPES = [
    (3, 6, 5, 1, 0, 32),  # lenet conv1
    (6, 16, 5, 1, 0, 14),  # lenet conv2
    (3, 16, 5, 1, 2, 32),  # deepnet conv1
    (3, 8, 3, 1, 1, 32),  # stems / plain CNNs
    (8, 16, 3, 1, 1, 16),
    (8, 16, 3, 2, 1, 16),  # BasicBlock stride 2
    (8, 16, 3, 2, 1, 15),  # ... odd size
    (6, 16, 1, 1, 0, 14),  # 1x1 projection, stride 1
    (8, 16, 1, 2, 0, 15),  # 1x1 projection, stride 2, odd size
    (64, 64, 3, 1, 1, 8),  # wide enough for oneDNN's blocked AVX-512 kernels
    (16, 32, 3, 1, 1, 2),  # map smaller than the kernel
    (8, 16, 3, 2, 1, 2),
]


def _ids(c):
    return f"c{c[0]}-{c[1]}_k{c[2]}_s{c[3]}_p{c[4]}_{c[5]}px"


def _reference(x, w, strides, padding):
    return lax.conv_general_dilated(
        x, w, strides, padding, dimension_numbers=("NHWC", "HWIO", "NHWC")
    )


def _assert_same_conv(strides, padding, x, w):
    ref = _reference(x, w, strides, padding)
    got = jax.jit(onednn.conv, static_argnums=(2, 3))(x, w, strides, padding)
    assert got.shape == ref.shape
    scale = float(jnp.max(jnp.abs(ref)))
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5 * scale)

    ct = jnp.asarray(np.random.default_rng(1).standard_normal(ref.shape), jnp.float32)

    def loss(conv):
        return lambda x, w: jnp.sum(conv(x, w, strides, padding) * ct)

    refs = jax.grad(loss(_reference), argnums=(0, 1))(x, w)
    gots = jax.jit(jax.grad(loss(onednn.conv), argnums=(0, 1)))(x, w)
    for got_g, ref_g in zip(gots, refs, strict=True):
        scale = float(jnp.max(jnp.abs(ref_g)))
        np.testing.assert_allclose(got_g, ref_g, rtol=1e-5, atol=1e-5 * scale)


def test_onednn_is_there_where_it_should_be():
    """On x86-64 Linux with the oneDNN wheels installed (or declared by the installed
    package) and CIFAR_JAX_ONEDNN not 0, the kernel must build and load: otherwise every
    conv silently falls back to XLA's, and every test below would be skipped, not failed."""
    why = onednn_expected()
    if not why:
        pytest.skip(f"oneDNN is not expected here: {onednn.unavailable_reason() or 'it is'}")
    assert onednn.available(), (
        f"oneDNN should be available ({why}, CIFAR_JAX_ONEDNN is not 0) but is not: "
        f"{onednn.unavailable_reason()}. Fix: pip install -e . (it installs "
        "onednn-cpu-gomp and onednn-devel-cpu-gomp) and make sure g++ is on the PATH; or "
        "set CIFAR_JAX_ONEDNN=0 to run without it."
    )
    assert onednn.unavailable_reason() == ""


@needs_onednn
@pytest.mark.parametrize("cin,cout,k,stride,pad,size", SHAPES, ids=map(_ids, SHAPES))
def test_onednn_conv_equals_xla_conv_forward_and_gradients(cin, cout, k, stride, pad, size):
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((4, size, size, cin)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((k, k, cin, cout)) * 0.2, jnp.float32)
    _assert_same_conv((stride, stride), ((pad, pad), (pad, pad)), x, w)


@needs_onednn
def test_onednn_conv_asymmetric_strides_and_padding():
    rng = np.random.default_rng(2)
    x = jnp.asarray(rng.standard_normal((3, 9, 12, 5)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((3, 2, 5, 7)), jnp.float32)
    _assert_same_conv((2, 1), ((0, 1), (1, 0)), x, w)


def _hook_hlo(x, w, pads=((1, 1), (1, 1))):
    dn = lax.conv_dimension_numbers(x.shape, w.shape, ("NHWC", "HWIO", "NHWC"))
    return (
        jax.jit(
            lambda x, w: fast_ops.conv_general_dilated(
                x, w, (1, 1), pads, (1, 1), (1, 1), dimension_numbers=dn
            )
        )
        .lower(x, w)
        .as_text()
    )


@needs_onednn
@pytest.mark.skipif(not on_cpu or jax.device_count() != 1, reason="one CPU device")
def test_conv_hook_uses_onednn_on_one_cpu_device():
    x, w = jnp.ones((2, 8, 8, 4)), jnp.ones((3, 3, 4, 5))
    for pads in (((1, 1), (1, 1)), ((0, 1), (1, 0))):
        hlo = _hook_hlo(x, w, pads)
        assert onednn.TARGET_NAME in hlo and "convolution(" not in hlo
    # Not for other dtypes (bf16 only where oneDNN has bf16 hardware: see
    # test_half_precision.py), and the lever can be switched off (bench_levers does).
    assert "convolution(" in _hook_hlo(x.astype(jnp.float16), w.astype(jnp.float16))
    bf16 = _hook_hlo(x.astype(jnp.bfloat16), w.astype(jnp.bfloat16))
    assert (onednn.TARGET_NAME in bf16) == onednn.bf16_available() != ("convolution(" in bf16)
    with levers.switched(onednn=False):
        assert onednn.TARGET_NAME not in _hook_hlo(x, w)


@needs_onednn
@pytest.mark.skipif(not on_cpu, reason="CPU only")
def test_model_gradients_equal_with_and_without_onednn():
    """A whole jitted ResNet (BatchNorm, strided and 1x1 projection convs): loss and
    gradients with oneDNN convs equal those with XLA's."""
    net, variables, x = narrow_model("resnet_small", widths=(8, 16, 16))

    def value_and_grads():
        fn = train_loss_and_grads(net, variables, x)
        hlo = fn.lower(variables["params"]).as_text()
        assert (onednn.TARGET_NAME in hlo) == onednn.use_onednn(x, x)
        return fn(variables["params"])

    assert onednn.use_onednn(x, x) == (jax.device_count() == 1)
    fast = value_and_grads()
    with levers.switched(onednn=False):
        plain = value_and_grads()
    for a, b in zip(jax.tree.leaves(fast), jax.tree.leaves(plain), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * float(np.max(np.abs(b))))


_PROBE = """
import jax, jax.numpy as jnp
from jax import lax
from cifar_jax.kernels import fast_ops, onednn
x, w = jnp.ones((8, 8, 8, 4)), jnp.ones((3, 3, 4, 5))
dn = lax.conv_dimension_numbers(x.shape, w.shape, ("NHWC", "HWIO", "NHWC"))
f = lambda x, w: fast_ops.conv_general_dilated(x, w, (1, 1), ((1, 1), (1, 1)), (1, 1), (1, 1),
                                               dimension_numbers=dn)
print(jax.device_count(), onednn.TARGET_NAME in jax.jit(f).lower(x, w).as_text(),
      repr(onednn.unavailable_reason()))
"""


def _probe(**env):
    out = subprocess.run(
        [sys.executable, "-c", _PROBE],
        env=dict(os.environ, **env),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.strip().split(maxsplit=2)


@needs_onednn
def test_outside_the_steps_multi_device_meshes_and_the_switch_keep_xla_convs():
    """On an 8-device mesh, outside a step traced under its batch mesh, a custom call's
    operands would be gathered to one device, so XLA's conv stays; CIFAR_JAX_ONEDNN=0
    turns oneDNN off and says so."""
    assert _probe(XLA_FLAGS="--xla_force_host_platform_device_count=8")[:2] == ["8", "False"]
    assert _probe(CIFAR_JAX_ONEDNN="0") == ["1", "False", "'CIFAR_JAX_ONEDNN=0'"]


_SHARDED_STEP = """
import jax, numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P
from cifar_jax import models, optim, parallel, steps, config as config_lib
from cifar_jax.kernels import levers, onednn
config = config_lib.base_config()
config.model, config.widths, config.batch_size = "resnet_small", (8, 16, 16), 16
mesh = parallel.create_mesh()
net = models.build_model(config, 10)
tx = optim.create_optimizer(config, 0.1)
rng = np.random.default_rng(0)
batch = {"image": rng.integers(0, 256, (16, 32, 32, 3), dtype=np.uint8),
         "label": rng.integers(0, 10, 16).astype(np.int32)}
batch = parallel.to_global(batch, NamedSharding(mesh, P("data")))
def step():
    state = steps.create_train_state(net, tx, 0, NamedSharding(mesh, P()))
    train_step, eval_step = steps.jit_steps(config, net, tx, np.full(3, 120.0),
                                            np.full(3, 60.0), mesh)
    hlo = train_step.lower(state, batch).compile().as_text()
    old = jax.tree.leaves(jax.device_get(state.params))
    new, _ = train_step(state, batch)
    return hlo, [b - a for a, b in zip(old, jax.tree.leaves(jax.device_get(new.params)))]
hlo, fast = step()
with levers.switched(onednn=False):
    plain_hlo, plain = step()
# Parameter updates agree to float rounding (a missing sum over shards: off by ~7/8).
worst = max(float(np.linalg.norm(a - b) / (np.linalg.norm(b) + 1e-12))
            for a, b in zip(fast, plain))
print(worst)
print(jax.device_count(), onednn.TARGET_NAME in hlo, onednn.TARGET_NAME in plain_hlo,
      "all-gather" in hlo, worst < 0.05)
"""


@needs_onednn
def test_train_step_on_an_8_device_mesh_runs_onednn_per_shard():
    """Inside the train step (traced under its batch mesh) each device convolves its own
    shard: the custom call is there, nothing is gathered, and the updated parameters
    equal those of XLA's convs (a kernel gradient not summed over the 8 shards would be
    1/8 of the right one)."""
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8")
    out = subprocess.run(
        [sys.executable, "-c", _SHARDED_STEP],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[1:] == ["8", "True", "False", "False", "True"], out.stdout


def test_missing_onednn_falls_back_with_the_install_command(monkeypatch):
    monkeypatch.delenv("CIFAR_JAX_ONEDNN", raising=False)  # the switch would answer first
    monkeypatch.setattr(onednn, "_find_onednn", lambda: None)
    monkeypatch.setattr(onednn.sys, "platform", "linux")
    monkeypatch.setattr(onednn.platform, "machine", lambda: "x86_64")
    ok, reason = onednn._load.__wrapped__()
    assert not ok
    assert "pip install onednn-cpu-gomp onednn-devel-cpu-gomp" in reason


def test_failed_build_is_an_error_naming_the_compiler_output(monkeypatch, tmp_path):
    monkeypatch.setenv("CIFAR_JAX_CACHE", str(tmp_path))
    monkeypatch.setenv("CXX", sys.executable)  # "compiles" by failing on the C++ source
    with pytest.raises(RuntimeError, match="compiling onednn_conv.cc failed"):
        onednn._build(tmp_path / "include", tmp_path / "lib")
    assert list(tmp_path.iterdir()) == []  # no half-written library left behind


@needs_onednn
def test_a_broken_cached_build_is_rebuilt(tmp_path):
    """A cached library that no longer loads (say, truncated by a full disk) is rebuilt,
    not a silent fall back to XLA's convs for every later run (fresh processes: a
    process registers the kernel once)."""
    script = "from cifar_jax.kernels import onednn; print(onednn.available())"
    env = dict(os.environ, CIFAR_JAX_CACHE=str(tmp_path))

    def available_in_a_new_process():
        out = subprocess.run(
            [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300
        )
        assert out.returncode == 0, out.stderr[-2000:]
        return out.stdout.split()[-1]

    assert available_in_a_new_process() == "True"
    (cached,) = tmp_path.glob("onednn_conv-*.so")
    cached.write_bytes(b"not a shared library")
    assert available_in_a_new_process() == "True"
    assert cached.stat().st_size > 10_000
