"""Convolutions through oneDNN on CPU: an XLA FFI custom call, built on first use.

XLA:CPU runs convolutions with Eigen; its kernel gradients go through batch-minor
transposed copies of the activations (10-20% of a ResNet step) and its forward 3x3 convs
of 64+ channels are 20-40% slower than oneDNN's on AVX-512. oneDNN (what PyTorch uses on
CPU) reads and writes NHWC activations directly. Measured per conv fwd+bwd on the seed-model shapes:
1.3-5.4x faster than XLA's (docs/performance.md, ``bench_ops convs``).

The kernel is ``onednn_conv.cc`` next to this file: one FFI handler with three modes
(forward, input gradient, kernel gradient), primitives cached per shape, only the small
kernel reordered to oneDNN's blocked layout. It is compiled once with the system C++
compiler against the ``onednn-cpu-gomp`` / ``onednn-devel-cpu-gomp`` wheels (pyproject
dependencies on x86-64 Linux) and jaxlib's FFI headers, into
``$CIFAR_JAX_CACHE`` (default ``~/.cache/cifar_jax``), keyed by a hash of the source and
the library versions. If anything is missing (no compiler, no oneDNN, another OS or
architecture) :func:`unavailable_reason` says what, and convolutions stay XLA's: results
agree to float rounding either way (tests/test_onednn.py).

bfloat16 (``config.half_precision``): where oneDNN runs bf16 convs in hardware (AMX or
AVX512_BF16, :func:`bf16_available`, probed once, on first use), bf16 convs take the
same kernel: forward and input gradient bf16 in and out with f32 accumulation inside
oneDNN; the kernel gradient accumulated in f32 diff_weights and rounded to the kernel's
dtype once, read from float32 copies of the activations by default (oneDNN 3.2's AMX
bf16 kernel gradient stalls on a shared 2-core machine), or from the bf16 activations
themselves in steps traced under :func:`bf16_kernel_grads` (``config.cpu_bf16_kernel_grads``).
With AMX, the forward and input gradient of 256->256 3x3 convs at 15x15 ran 3-4x faster
than float32's (9x with one oneDNN thread). Elsewhere (e.g. AVX2-only CPUs) bf16 convs
stay XLA's; results agree up to bf16 rounding either way. ``CIFAR_JAX_ONEDNN_BF16=0``
keeps bf16 convs on XLA's path.

Used for float32 (and supported bf16) convs on CPU: on a single device, and on a mesh
of several (CPU test meshes, multi-process runs) inside the train and eval steps, whose
batch is sharded over the "data" axis: :func:`cifar_jax.parallel.traced_on` traces them
under :func:`batch_sharded_over`, and each conv runs per device shard in ``shard_map`` (a bare
custom call would make the partitioner gather its operands onto one device). Anywhere
else on a multi-device mesh, XLA's convs run. ``CIFAR_JAX_ONEDNN=0`` turns it off for the
process; the ``onednn`` lever (:mod:`cifar_jax.kernels.levers`) for the steps traced under it.
"""

from __future__ import annotations

import contextlib
import contextvars
import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Iterator
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from cifar_jax.kernels import levers, lowering

SOURCE = Path(__file__).with_name("onednn_conv.cc")
TARGET_NAME = "cifar_jax_onednn_conv"
_FORWARD, _INPUT_GRAD, _KERNEL_GRAD = 0, 1, 2


def _prefixes() -> list[Path]:
    """Where pip puts a wheel's ``data`` files (lib/, include/): this environment's prefix
    and the user base."""
    paths = [Path(sysconfig.get_paths()["data"]), Path(sys.prefix)]
    user = sysconfig.get_paths(f"{os.name}_user").get("data") if os.name == "posix" else None
    if user:
        paths.append(Path(user))
    return list(dict.fromkeys(paths))


def _find_onednn() -> tuple[Path, Path] | None:
    """(include dir, lib dir) of the oneDNN wheels, or None."""
    for prefix in _prefixes():
        include, lib = prefix / "include", prefix / "lib"
        if (include / "oneapi" / "dnnl" / "dnnl.hpp").is_file() and any(lib.glob("libdnnl.so*")):
            return include, lib
    return None


def _cache_dir() -> Path:
    return Path(os.environ.get("CIFAR_JAX_CACHE") or Path.home() / ".cache" / "cifar_jax")


def _build(include: Path, lib: Path) -> Path:
    """Compiles the kernel (once per source / library version) and returns the .so."""
    import jaxlib

    digest = hashlib.sha256(SOURCE.read_bytes())
    digest.update(f"{jaxlib.__version__} {include} {lib}".encode())
    version_header = include / "oneapi" / "dnnl" / "dnnl_version.h"  # a new oneDNN: rebuild
    if version_header.is_file():
        digest.update(version_header.read_bytes())
    out = _cache_dir() / f"onednn_conv-{digest.hexdigest()[:16]}.so"
    if out.is_file():
        return out
    logging.info("Building the oneDNN convolution kernel (once) into %s", out)
    compiler = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")
    if compiler is None:
        raise RuntimeError("no C++ compiler (g++/c++) on PATH; set CXX")
    out.parent.mkdir(parents=True, exist_ok=True)
    # Build to a temporary name and rename: processes started together (launch.sh) may
    # build at the same time, and none may load a half-written library.
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=out.parent)
    os.close(fd)
    cmd = [
        compiler, "-O2", "-std=c++17", "-shared", "-fPIC",
        f"-I{include}", f"-I{jax.ffi.include_dir()}",
        str(SOURCE), "-o", tmp,
        f"-L{lib}", "-ldnnl", f"-Wl,-rpath,{lib}",
    ]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        os.unlink(tmp)
        raise RuntimeError(f"compiling {SOURCE.name} failed:\n{result.stderr[-2000:]}")
    os.replace(tmp, out)
    return out


_LIBRARY: list[ctypes.CDLL] = []  # the loaded kernel, once _load succeeded


@functools.cache
def _load() -> tuple[bool, str]:
    """Builds, loads and registers the kernel; (ok, reason it is not used)."""
    if os.environ.get("CIFAR_JAX_ONEDNN", "1") == "0":
        return False, "CIFAR_JAX_ONEDNN=0"
    if sys.platform != "linux" or platform.machine() not in ("x86_64", "AMD64"):
        return False, (
            f"oneDNN convs are built for x86-64 Linux only, not {sys.platform} {platform.machine()}"
        )
    found = _find_onednn()
    if found is None:
        return False, "oneDNN not installed (pip install onednn-cpu-gomp onednn-devel-cpu-gomp)"
    try:
        path = _build(*found)
        try:
            library = ctypes.cdll.LoadLibrary(str(path))
        except OSError:  # a cached build that no longer loads (truncated, other libc)
            path.unlink()
            library = ctypes.cdll.LoadLibrary(str(_build(*found)))
        jax.ffi.register_ffi_target(
            TARGET_NAME, jax.ffi.pycapsule(library.OnednnConv), platform="cpu"
        )
    except (OSError, RuntimeError) as e:
        return False, str(e)
    _LIBRARY.append(library)
    return True, ""


@functools.cache
def _bf16_support() -> tuple[bool, str]:
    """(whether bf16 convs run through oneDNN, what was found or why not)."""
    if not available():
        return False, f"oneDNN unavailable: {unavailable_reason()}"
    if os.environ.get("CIFAR_JAX_ONEDNN_BF16", "1") == "0":
        return False, "CIFAR_JAX_ONEDNN_BF16=0"
    probe = getattr(_LIBRARY[-1], "OnednnBf16Support", None)
    if probe is None:
        return False, "the loaded kernel has no bf16 probe"
    probe.argtypes, probe.restype = [ctypes.c_char_p, ctypes.c_int], ctypes.c_int
    info = ctypes.create_string_buffer(1024)
    ok = bool(probe(info, len(info)))
    return ok, info.value.decode(errors="replace")


def bf16_available() -> bool:
    """Whether bfloat16 convs run through oneDNN on this CPU: the kernel is available and
    oneDNN's bf16 convs (forward and both gradients) are jitted for an ISA with bf16
    arithmetic (AMX or AVX512_BF16), not emulated or reference code."""
    return _bf16_support()[0]


def bf16_on_amx() -> bool:
    """Whether oneDNN runs this CPU's bf16 convs on AMX (its probed ISA names ``amx``): the
    one CPU bf16 path measured faster than float32 here; with AVX512_BF16 alone bf16 ran
    slower than float32 (docs/fast.md, "The machines")."""
    ok, info = _bf16_support()
    return ok and "amx" in info.split(";")[0]


def half_precision_fallback_reason(platform: str) -> str | None:
    """Why a ``half_precision_fallback`` run on ``platform`` (the platform of the devices it
    runs on) computes in float32, or None where it keeps bf16 (GPU, TPU, a CPU with AMX)."""
    if platform != "cpu" or bf16_on_amx():
        return None
    return (
        f"this CPU's oneDNN has no AMX bf16 path ({bf16_info()}), where bf16 runs slower "
        "than float32"
    )


def bf16_info() -> str:
    """The ISA and oneDNN implementations found by the bf16 probe, or why it failed."""
    return _bf16_support()[1]


def available() -> bool:
    """Whether the oneDNN conv kernel is built and registered (builds it on first call)."""
    return _load()[0]


def unavailable_reason() -> str:
    """Why :func:`available` is False ('' when it is True)."""
    return _load()[1]


# The mesh a train / eval step shards its batch over (axis "data"), set while the step is
# traced (parallel.traced_on): there convs run through oneDNN per device shard, in shard_map.
_BATCH_MESH: contextvars.ContextVar[Mesh | None] = contextvars.ContextVar(
    "cifar_jax_onednn_batch_mesh", default=None
)


@contextlib.contextmanager
def batch_sharded_over(mesh: Mesh) -> Iterator[None]:
    """Convs traced inside see batches sharded over ``mesh``'s "data" axis."""
    token = _BATCH_MESH.set(mesh)
    try:
        yield
    finally:
        _BATCH_MESH.reset(token)


def _shard_mesh(batch: int) -> Mesh | None:
    """The batch mesh to run oneDNN convs under, or None for a single device."""
    mesh = _BATCH_MESH.get()
    if mesh is None or mesh.size == 1:
        return None
    return mesh if mesh.axis_names == ("data",) and batch % mesh.size == 0 else None


def use_onednn(lhs: jax.Array, rhs: jax.Array) -> bool:
    """Whether a plain NHWC/HWIO conv of these operands runs through oneDNN (trace time):
    float32 (or bfloat16 where :func:`bf16_available`) on CPU, on one device or inside a
    step whose batch is sharded over every device (:func:`batch_sharded_over`); lever
    ``onednn`` on."""
    if not lowering.cpu_kernels_on() or not levers.current().onednn or lhs.dtype != rhs.dtype:
        return False
    if lhs.dtype != jnp.float32 and lhs.dtype != jnp.bfloat16:
        return False
    mesh = _shard_mesh(lhs.shape[0])
    one_device = jax.device_count() == 1
    if not (one_device or (mesh is not None and mesh.size == jax.device_count())):
        return False
    return available() and (lhs.dtype == jnp.float32 or bf16_available())


def sharded_conv(x: jax.Array, kernel: jax.Array, strides, padding) -> jax.Array:
    """:func:`conv` on each device's batch shard (no gather; the kernel gradient is summed
    over devices by shard_map's transpose), or plain :func:`conv` on one device."""
    mesh = _shard_mesh(x.shape[0])
    if mesh is None:
        return conv(x, kernel, strides, padding)
    return jax.shard_map(
        lambda x, k: conv(x, k, strides, padding),
        mesh=mesh,
        in_specs=(P("data"), P()),
        out_specs=P("data"),
        check_vma=False,
    )(x, kernel)


def _call(mode: int, a, b, out_shape, strides, padding, out_dtype=None):
    """One kernel call; the result has ``a``'s dtype unless ``out_dtype`` is given."""
    if not available():  # registers the FFI target on first use
        raise RuntimeError(f"oneDNN convolutions are unavailable: {unavailable_reason()}")
    (pt, pb), (pl, pr) = padding
    return jax.ffi.ffi_call(
        TARGET_NAME,
        jax.ShapeDtypeStruct(out_shape, out_dtype or a.dtype),
        vmap_method="sequential",
    )(
        a, b, mode=np.int64(mode), sh=np.int64(strides[0]), sw=np.int64(strides[1]),
        pt=np.int64(pt), pb=np.int64(pb), pl=np.int64(pl), pr=np.int64(pr),
    )  # fmt: skip


def _out_size(size: int, kernel: int, stride: int, lo: int, hi: int) -> int:
    return (size + lo + hi - kernel) // stride + 1


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def conv(x: jax.Array, kernel: jax.Array, strides: tuple[int, int], padding) -> jax.Array:
    """NHWC x HWIO -> NHWC convolution through oneDNN; ``padding`` = ((top, bottom), (left,
    right)). Same values as ``lax.conv_general_dilated`` up to float rounding. ``x`` and
    ``kernel``: both float32 or both bfloat16 (the output has their dtype)."""
    n, h, w, _ = x.shape
    kh, kw, _, co = kernel.shape
    (pt, pb), (pl, pr) = padding
    out_shape = (
        n,
        _out_size(h, kh, strides[0], pt, pb),
        _out_size(w, kw, strides[1], pl, pr),
        co,
    )
    return _call(_FORWARD, x, kernel, out_shape, strides, padding)


def _conv_fwd(x, kernel, strides, padding):
    return conv(x, kernel, strides, padding), (x, kernel)


def _conv_bwd(strides, padding, residuals, dy):
    x, kernel = residuals
    dy = dy.astype(x.dtype)
    dx = _call(_INPUT_GRAD, dy, kernel, x.shape, strides, padding)
    if x.dtype == jnp.bfloat16 and not _BF16_KERNEL_GRADS.get():
        x, dy = x.astype(jnp.float32), dy.astype(jnp.float32)  # see bf16_kernel_grads
    # bf16: accumulated in f32 by oneDNN (f32 diff_weights), rounded once to bf16 here.
    dkernel = _call(_KERNEL_GRAD, x, dy, kernel.shape, strides, padding, jnp.float32)
    return dx, dkernel.astype(kernel.dtype)


_BF16_KERNEL_GRADS: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "cifar_jax_bf16_kernel_grads", default=False
)


@contextlib.contextmanager
def bf16_kernel_grads(on: bool) -> Iterator[None]:
    """bf16 convs traced inside take their kernel gradients from the bf16 activations
    (oneDNN's bf16 src / diff_dst, f32 diff_weights) if ``on``, else from float32 copies
    of them (the default): ``config.cpu_bf16_kernel_grads``, entered around a run's train
    step by :func:`cifar_jax.parallel.traced_on`. The same products (a bf16 product is
    exact in float32), summed in another order. oneDNN 3.2's AMX kernel-gradient conv
    (brgconv_bwd_w) is ~1.2x faster per airbench94 step with the cores to itself, but with
    two threads on a 2-core machine shared with another process it took 4-10x longer than
    float32's (it waits on its other thread: 25 of 27 s of two resnet_small b128 bf16
    steps), so the default converts and runs float32's, which has no such stall."""
    token = _BF16_KERNEL_GRADS.set(bool(on))
    try:
        yield
    finally:
        _BF16_KERNEL_GRADS.reset(token)


conv.defvjp(_conv_fwd, _conv_bwd)


def half_precision_note(bf16_kernel_grads: bool | None) -> tuple[str, bool]:
    """What bfloat16 compute (config.half_precision) runs on in this process, and whether
    that is slow: on a CPU whose oneDNN has no bf16 hardware path (AMX, AVX512_BF16) XLA
    runs bf16 ops by converting to and from float32, slower than a float32 run.
    ``bf16_kernel_grads``: the run's ``config.cpu_bf16_kernel_grads``, named in the note;
    None leaves the kernel gradients out (a machine record, before any config)."""
    if jax.default_backend() != "cpu":
        return f"bfloat16 on {jax.default_backend()}", False
    if bf16_available():
        if bf16_kernel_grads is None:
            return f"bfloat16 convs through oneDNN ({bf16_info()})", False
        wgrad = "bf16" if bf16_kernel_grads else "float32 copies of the"
        return (
            f"bfloat16 convs through oneDNN ({bf16_info()}), kernel gradients from {wgrad} "
            "activations"
        ), False
    return (
        f"bfloat16 on a CPU without bf16 support in oneDNN ({bf16_info()}): XLA's CPU bf16 "
        "ops convert to and from float32, so this is SLOWER than float32 here; "
        "half_precision is for GPUs/TPUs and CPUs with AMX or AVX512_BF16"
    ), True


def conv_backend() -> str:
    """Which kernels run this process's float32 convs, for logs and benchmark records."""
    if jax.default_backend() != "cpu":
        return f"xla ({jax.default_backend()})"
    if not available():
        return f"xla ({unavailable_reason()})"
    n = jax.device_count()
    return "onednn" if n == 1 else f"onednn (per device shard of {n} in train/eval steps)"
