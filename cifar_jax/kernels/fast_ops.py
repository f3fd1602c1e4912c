"""CPU formulations of max-pooling, convolution and training-mode BatchNorm.

Pooling. XLA:CPU runs the gradient of a window max-pool (``reduce_window``, whose VJP is
select-and-scatter) as a scatter with iota index tensors: ~40% of a LeNet train step on
2 cores. :func:`max_pool2x2` computes the same values from the four strided views of
each 2x2 window and saves the position of the first maximum (row-major, strict ``>``,
NaN wins: torch's ``MaxPool2d`` and XLA's select-and-scatter rule); its custom gradient
routes each output gradient there with four selects. Values and gradients equal the
window form's; 3-5x faster fwd+bwd on CPU. (The obvious ``x == max`` mask, which is also
what ``jnp.max``'s own gradient uses, is NOT safe: inside a whole jitted model XLA may
recompute ``x`` in another fusion with different rounding, and the mask then silently
drops gradients. The saved index avoids that; tests/test_fast_conv.py checks it.)

Convolution. On one CPU device, float32 convolutions go through oneDNN
(:mod:`cifar_jax.kernels.onednn`: 1.3-5.4x faster fwd+bwd than XLA's, whole steps
1.1-1.6x; bfloat16 ones too where the CPU has bf16 hardware, for half_precision),
except on maps smaller than the kernel, where im2col (below) is faster still.
Maps smaller than the kernel (VGG's last stage, 3x3 convs on 2x2 maps): XLA:CPU
rewrites those into a batch-as-feature convolution that is ~100x slower, and oneDNN is
1.3-1.6x slower than :func:`conv_im2col` (patch extraction + one matmul; backward by
autodiff; :func:`use_im2col`). Where oneDNN is not available, XLA's own (Eigen)
convolution runs the rest, except LeNet's first conv (3 -> 6 channels, 5x5), where a
direct tap sum is 2-3x faster (:mod:`cifar_jax.kernels.small_conv`). Measured on the
other seed-model shapes and rejected (docs/performance.md): im2col everywhere (2-10x
slower: the patch matrix costs more to write than the matmul saves), 1x1 convs as
matmuls (no difference to whole steps; tests/test_fast_conv.py keeps it), and a matmul +
overlap-add input gradient (won in isolation for few-channel and strided convs, but
inside a step XLA split the overlap-add into kh*kw materialized pads, 10x slower).

BatchNorm. :func:`batch_norm_train` computes flax's values with a hand-written gradient
on CPU (see there); :class:`cifar_jax.models.layers.BatchNorm` uses it.

GELU. :func:`gelu`, the exact form with a hand-written gradient on CPU (see there); the
models' ``activation="gelu"``.

These functions pick their CPU forms at trace time for programs lowered for the CPU
(:mod:`cifar_jax.kernels.lowering`), so GPU/TPU programs are unchanged, also when a CPU
machine lowers them; each CPU form is a switch in :mod:`cifar_jax.kernels.levers`.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from jax import lax
from jax.custom_derivatives import SymbolicZero

from cifar_jax.kernels import levers, lowering, onednn, small_conv


def max_pool2x2_window(x: jax.Array) -> jax.Array:
    """Reference: 2x2/stride-2 VALID max-pool as a reduce-window (torch's MaxPool2d(2))."""
    return lax.reduce_window(x, -jnp.inf, lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")


def _window_max_and_index(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Max of each 2x2 window and the (row-major) position of its first maximum.

    Strict ``>`` keeps the first of equal values and NaN wins, as in torch's MaxPool2d.
    Each window element is a strided view of ``x`` itself: for odd sizes the last row or
    column is never read (VALID pooling), without first copying ``x`` cropped.
    """
    n, h, w, c = x.shape
    h2, w2 = h // 2, w // 2

    def view(i: int, j: int) -> jax.Array:  # element (i, j) of every window
        return lax.slice(x, (0, i, j, 0), (n, i + 2 * h2 - 1, j + 2 * w2 - 1, c), (1, 2, 2, 1))

    best = view(0, 0)
    index = jnp.zeros(best.shape, jnp.int8)
    for k, (i, j) in enumerate(((0, 1), (1, 0), (1, 1)), start=1):
        v = view(i, j)
        better = (v > best) | jnp.isnan(v)
        best = jnp.where(better, v, best)
        index = jnp.where(better, jnp.int8(k), index)
    return best, index


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2))
def _pool(x: jax.Array, broadcast: bool, hw: tuple[int, int]) -> jax.Array:
    return _window_max_and_index(x)[0]


def _pool_fwd(x: jax.Array, broadcast: bool, hw: tuple[int, int]):
    y, index = _window_max_and_index(x)
    # The gradient uses the saved index, never ``x == y``: XLA may recompute x in another
    # fusion with different rounding (FMA contraction), which made equality masks drop
    # gradients inside whole models.
    return y, index


# From this many channels the pooling gradient is one broadcast select (5-12% faster
# whole steps for the 32-128 channel CNNs); below, the stacked form (the broadcast form
# vectorizes badly over 6 channels: 4x slower for LeNet's first pool).
POOL_BROADCAST_MIN_CHANNELS = 16


def _pool_bwd(broadcast: bool, hw: tuple[int, int], index, g):
    h, w = hw
    n, h2, w2, c = g.shape
    zero = jnp.zeros((), g.dtype)
    if h % 2 or w % 2:
        # Odd sizes: one more window row/column whose index matches no position (-1), so
        # the gradient comes out one even size larger and is cropped to x's, inside the
        # same elementwise pass (a pad of the even-size gradient was a separate pass).
        pads = ((0, 0), (0, h % 2), (0, w % 2), (0, 0))
        index, g = jnp.pad(index, pads, constant_values=-1), jnp.pad(g, pads)
        h2, w2 = h2 + h % 2, w2 + w % 2
    if broadcast:
        # dx[n, 2i+a, 2j+b, c] = g[n, i, j, c] where the saved index is 2a+b.
        shape = (1, 1, 2, 1, 2, 1)
        position = 2 * lax.broadcasted_iota(jnp.int8, shape, 2) + lax.broadcasted_iota(
            jnp.int8, shape, 4
        )
        wide = index[:, :, None, :, None, :] == position
        dx = jnp.where(wide, g[:, :, None, :, None, :], zero)
    else:
        parts = [jnp.where(index == k, g, zero) for k in range(4)]  # (0,0) (0,1) (1,0) (1,1)
        row0 = jnp.stack(parts[0:2], axis=3)  # n, h/2, w/2, 2(j), c
        row1 = jnp.stack(parts[2:4], axis=3)
        dx = jnp.stack([row0, row1], axis=2)  # n, h/2, 2(i), w/2, 2(j), c
    return (dx.reshape(n, 2 * h2, 2 * w2, c)[:, :h, :w, :],)


_pool.defvjp(_pool_fwd, _pool_bwd)


def max_pool2x2_index(x: jax.Array) -> jax.Array:
    """2x2/stride-2 max-pool from the four strided views, gradient through the saved index
    of the first maximum; values and gradients equal to :func:`max_pool2x2_window`.

    Odd sizes leave the last row/column out (as VALID pooling and torch do); its gradient
    is 0.
    """
    broadcast = x.shape[-1] >= POOL_BROADCAST_MIN_CHANNELS and levers.current().pool_broadcast
    return _pool(x, broadcast, x.shape[1:3])


def max_pool2x2(x: jax.Array, deterministic: bool = False) -> jax.Array:
    """The models' 2x2/stride-2 max-pool (torch's ``MaxPool2d(2)``).

    On CPU (decided at trace time): :func:`max_pool2x2_index`, 3-5x faster there than the
    window form because XLA:CPU runs select-and-scatter as a scatter. Elsewhere (GPU/TPU)
    the window form, unchanged, unless ``deterministic``: select-and-scatter has no
    deterministic GPU kernel (google/flax#4233), while the index form's gradient is
    plain selects. In an exported program (:func:`lowering.portable_on`) the index
    form too: it is strided slices and selects, which every runtime and converter maps
    exactly.
    """
    portable = lowering.portable_on()
    if deterministic or portable or (lowering.cpu_kernels_on() and levers.current().cpu_pool):
        return max_pool2x2_index(x)
    return max_pool2x2_window(x)


def _pad_nhwc(x: jax.Array, padding: int) -> jax.Array:
    if not padding:
        return x
    return jnp.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))


def conv_im2col(x: jax.Array, kernel: jax.Array, stride: int, padding: int) -> jax.Array:
    """Convolution as shifted-window patch extraction + one matmul (see module docstring)."""
    kh, kw, cin, cout = kernel.shape
    x = _pad_nhwc(x, padding)
    n, h, w, _ = x.shape
    ho, wo = (h - kh) // stride + 1, (w - kw) // stride + 1
    cols = [
        x[:, i : i + stride * (ho - 1) + 1 : stride, j : j + stride * (wo - 1) + 1 : stride, :]
        for i in range(kh)
        for j in range(kw)
    ]
    patches = jnp.concatenate(cols, axis=-1) if len(cols) > 1 else cols[0]
    y = patches.reshape(-1, kh * kw * cin) @ kernel.reshape(kh * kw * cin, cout)
    return y.reshape(n, ho, wo, cout)


def use_im2col(x_shape: tuple[int, ...], kernel_shape: tuple[int, ...]) -> bool:
    """Whether a (stride-1 or strided) conv runs as im2col on CPU: maps smaller than the
    kernel (VGG's 2x2 stage). XLA:CPU rewrites those into a batch-as-feature convolution
    that took 2.9 s for a 128x2x2x512 -> 512 forward (im2col: 24 ms, 75x faster forward +
    backward); from 4x4 up XLA's own conv was faster in every seed-model shape."""
    return x_shape[1] < kernel_shape[0] or x_shape[2] < kernel_shape[1]


_NHWC = ("NHWC", "HWIO", "NHWC")


def conv_general_dilated(
    lhs,
    rhs,
    window_strides,
    padding,
    lhs_dilation=None,
    rhs_dilation=None,
    dimension_numbers=None,
    feature_group_count=1,
    precision=None,
    **kwargs,
):
    """Drop-in for ``lax.conv_general_dilated`` in flax ``nn.Conv(conv_general_dilated=)``.

    On CPU (decided at trace time), for an undilated, ungrouped NHWC/HWIO conv: on a map
    smaller than its kernel :func:`conv_im2col` (square, symmetric); otherwise oneDNN's
    conv (:mod:`cifar_jax.kernels.onednn`, float32, or bfloat16 on bf16 hardware, where
    it built); without oneDNN, LeNet's 3->6 5x5 first conv as
    :func:`cifar_jax.kernels.small_conv.conv_small_cin`, and the input of XLA's convs kept
    in memory (:func:`conv_input`). Everything else, and every conv on GPU/TPU, is
    exactly the plain ``lax.conv_general_dilated`` call.
    """
    args = dict(
        lhs_dilation=lhs_dilation,
        rhs_dilation=rhs_dilation,
        dimension_numbers=dimension_numbers,
        feature_group_count=feature_group_count,
        precision=precision,
        **kwargs,
    )
    plain = (
        not lowering.cpu_kernels_on()
        or kwargs
        or feature_group_count != 1
        or precision is not None
        or lhs.ndim != 4
        or isinstance(padding, str)
        or any(d != 1 for d in (*(lhs_dilation or ()), *(rhs_dilation or ())))
        or dimension_numbers != lax.conv_dimension_numbers(lhs.shape, rhs.shape, _NHWC)
    )
    if plain:
        return lax.conv_general_dilated(lhs, rhs, window_strides, padding, **args)
    strides = tuple(int(s) for s in window_strides)
    pads = tuple((int(lo), int(hi)) for lo, hi in padding)
    square = rhs.shape[0] == rhs.shape[1] and len(set(strides)) == 1
    symmetric = len({p for pair in pads for p in pair}) == 1
    lhs = conv_input(lhs)
    switches = levers.current()
    if square and symmetric and switches.im2col and use_im2col(lhs.shape, rhs.shape):
        return conv_im2col(lhs, rhs, strides[0], pads[0][0])  # faster than oneDNN here too
    if onednn.use_onednn(lhs, rhs):
        return onednn.sharded_conv(lhs, rhs, strides, pads)
    if square and symmetric and switches.small_conv:  # without oneDNN: LeNet's first conv
        if small_conv.use_small_cin(lhs.shape, rhs.shape, strides[0], pads[0][0]):
            return small_conv.conv_small_cin(lhs, rhs, strides[0], pads[0][0])
    return lax.conv_general_dilated(lhs, rhs, window_strides, padding, **args)


# Below this width the extra pass over the activation costs more than the transposes it
# saves (basenet_residual, 6-16 channels: 5% slower with it; 32 channels and up: faster).
MATERIALIZE_MIN_CHANNELS = 32


def conv_input(x: jax.Array) -> jax.Array:
    """``x`` unchanged, but kept in memory on CPU instead of being recomputed inside the
    layout transposes of the kernel gradient of the XLA conv it feeds
    (:func:`conv_general_dilated` applies it to every conv input it does not pass to
    oneDNN).

    XLA:CPU computes a conv's kernel gradient from a transposed (batch-minor) copy of its
    input. When that input is a chain of cheap elementwise ops (``relu(bn(conv))``, or a
    residual stream ``relu(bn(conv) + relu(bn(conv) + ...))``), XLA's fusion duplicates
    the chain into the transposing copy and evaluates it in transposed order: 40-110 ms
    per copy in a resnet_small b128 step where a plain transpose of the stored activation
    takes ~10-20. Fusion never duplicates an "expensive" op, and a division is one, so
    dividing by a 1 that XLA cannot prove constant (built from ``x`` itself) keeps
    every value bit-identical and makes the transposes read the stored activation.
    resnet_small b128 +33%, deepnet +12%, cnn_bn_dropout +10% (docs/performance.md).
    Only on CPU and for ``x.shape[-1] >= MATERIALIZE_MIN_CHANNELS``; GPU/TPU programs are
    unchanged (lever ``materialize``).
    """
    if (
        not lowering.cpu_kernels_on()
        or not levers.current().materialize
        or x.shape[-1] < MATERIALIZE_MIN_CHANNELS
        or onednn.use_onednn(x, x)  # oneDNN's kernel gradients need no transposes
    ):
        return x
    # Elementwise, so a batch-sharded x needs no communication (a 1 taken from one
    # element cost an all-reduce per call on a multi-device mesh); exactly 1 for inf/NaN.
    kept = lax.stop_gradient(x)
    one = jnp.where(jnp.isfinite(kept), kept * 0, 0) + 1
    return x / one


# ------------------------------------------------------------------ batch norm
def batch_stats(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Per-channel (last axis) mean and biased variance, as flax's ``nn.BatchNorm``
    computes them: float32, ``E[x^2] - E[x]^2`` clipped at 0, one fused reduction."""
    x = x.astype(jnp.promote_types(x.dtype, jnp.float32))
    axes = tuple(range(x.ndim - 1))
    mean, mean_sq = jnp.mean(x, axes), jnp.mean(lax.square(x), axes)
    return mean, jnp.maximum(0.0, mean_sq - lax.square(mean))


def normalize(x, mean, var, scale, bias, epsilon: float, dtype=None) -> jax.Array:
    """``(x - mean) * (scale * rsqrt(var + eps)) + bias``, flax's ``_normalize`` order, in
    float32 for a bfloat16 ``x`` (float32 statistics promote it); the result has ``dtype``
    (None: ``x``, scale and bias promoted, as flax)."""
    y = (x - mean) * (lax.rsqrt(var + epsilon) * scale) + bias
    return y.astype(dtype or jnp.result_type(x, scale, bias))


def _bn_train_autodiff(x, scale, bias, epsilon: float, dtype=None):
    mean, var = batch_stats(x)
    return normalize(x, mean, var, scale, bias, epsilon, dtype), mean, var


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def _bn_train_cpu(x, scale, bias, epsilon: float, dtype=None):
    return _bn_train_autodiff(x, scale, bias, epsilon, dtype)


def _bn_train_cpu_fwd(x, scale, bias, epsilon: float, dtype=None):
    y, mean, var = _bn_train_autodiff(x.value, scale.value, bias.value, epsilon, dtype)
    return (y, mean, var), (x.value, mean, lax.rsqrt(var + epsilon), scale.value)


def _bn_train_cpu_bwd(epsilon: float, dtype, residuals, cotangents):
    del epsilon, dtype  # epsilon is folded into the saved rsqrt
    x_saved, mean, rstd, scale = residuals
    dy, dmean, dvar = cotangents
    # bfloat16 activations: the gradient in float32 (as the statistics), dx rounded once.
    x, dy = x_saved.astype(mean.dtype), dy.astype(mean.dtype)
    axes = tuple(range(x.ndim - 1))
    count = math.prod(x.shape[:-1])
    dbias = jnp.sum(dy, axes)
    dscale = jnp.sum(dy * (x - mean), axes) * rstd
    # d/dx of y = xhat * scale + bias through x, mean and var (the textbook form
    # scale*rstd/m * (m*dy - dbias - xhat*dscale)) as k*dy + slope*x + offset with
    # per-channel coefficients: one pass over dy and x, no xhat array for XLA to keep.
    k = scale * rstd
    slope = -k * rstd * dscale / count
    offset = -k * dbias / count - slope * mean
    dx = k * dy + slope * x + offset
    # The batch statistics are outputs too (for the running averages); their
    # cotangents are symbolic zeros unless a loss uses them.
    if not isinstance(dmean, SymbolicZero):
        dx = dx + dmean / count
    if not isinstance(dvar, SymbolicZero):
        dx = dx + (x - mean) * (2.0 * dvar / count)
    return dx.astype(x_saved.dtype), dscale, dbias


_bn_train_cpu.defvjp(_bn_train_cpu_fwd, _bn_train_cpu_bwd, symbolic_zeros=True)


def use_fast_batch_norm(x: jax.Array) -> bool:
    """Whether training-mode BatchNorm takes the hand-written gradient: CPU, float32 or
    bfloat16 activations (the gradient is computed in float32 either way), lever
    ``fast_bn`` on."""
    return (
        lowering.cpu_kernels_on()
        and x.dtype in (jnp.float32, jnp.bfloat16)
        and levers.current().fast_bn
    )


def batch_norm_train(
    x: jax.Array, scale: jax.Array, bias: jax.Array, epsilon: float, dtype=None
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Training-mode BatchNorm over all axes but the last: ``(y, batch mean, batch var)``.
    ``y`` has ``dtype`` (None: ``x``, scale and bias promoted); the statistics are float32
    (also for a bfloat16 ``x``).

    The values are flax ``nn.BatchNorm``'s. Its gradient, by autodiff through
    ``E[x^2] - E[x]^2`` and the broadcasts, is on XLA:CPU a chain of reductions and
    elementwise passes over the activation. On CPU (float32 or bfloat16 ``x``; the
    gradient's math in float32) this uses the textbook gradient ``dx = scale*rstd/m *
    (m*dy - sum(dy) - xhat*sum(dy*xhat))``: two reductions and one elementwise pass, with
    per-channel coefficients so no ``xhat`` array is kept. float32 whole train steps
    0.99-1.08x, mostly +4% (``python -m cifar_jax bench_levers --lever=fast_bn``,
    docs/performance.md); bfloat16: docs/fast.md. Equal to the autodiff gradient within
    float rounding (tests/test_fast_bn.py). GPU/TPU programs are unchanged.
    """
    if use_fast_batch_norm(x):
        return _bn_train_cpu(x, scale, bias, epsilon, dtype)
    return _bn_train_autodiff(x, scale, bias, epsilon, dtype)


# ------------------------------------------------------------------ gelu
_SQRT_HALF = math.sqrt(0.5)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def gelu_exact(x: jax.Array) -> jax.Array:
    """torch's default ``nn.GELU()``, the exact erf form: ``jax.nn.gelu(x,
    approximate=False)``."""
    return jax.nn.gelu(x, approximate=False)


def _phi_cdf(x: jax.Array) -> jax.Array:
    # torch's form, 0.5 * (1 + erf(x / sqrt(2))): XLA's erf is one rational function, its
    # erfc (jax.nn.gelu's form) two branches and an exponential (~2x the time on CPU).
    return 0.5 * (1.0 + lax.erf(x * _SQRT_HALF))


def _gelu_f32(x: jax.Array) -> jax.Array:
    x = x.astype(jnp.promote_types(x.dtype, jnp.float32))
    return x * _phi_cdf(x)


@jax.custom_vjp
def _gelu_cpu(x: jax.Array) -> jax.Array:
    return _gelu_f32(x).astype(x.dtype)


def _gelu_cpu_fwd(x: jax.Array):
    return _gelu_cpu(x), x


def _gelu_cpu_bwd(x: jax.Array, g: jax.Array):
    xf = x.astype(jnp.promote_types(x.dtype, jnp.float32))
    # d/dx x * Phi(x) = Phi(x) + x * phi(x)
    slope = _phi_cdf(xf) + xf * (_INV_SQRT_2PI * jnp.exp(-0.5 * xf * xf))
    return ((g.astype(xf.dtype) * slope).astype(g.dtype),)


_gelu_cpu.defvjp(_gelu_cpu_fwd, _gelu_cpu_bwd)


def gelu(x: jax.Array) -> jax.Array:
    """Exact (erf) GELU, torch's ``nn.GELU()``.

    On CPU (lever ``fast_gelu``), float32 or bfloat16, with a hand-written gradient that
    saves only ``x`` and computes ``Phi(x) + x * phi(x)`` in one elementwise pass: autodiff
    through ``erfc`` kept its linearization (erfc, the exponential, products) as separate
    arrays, three to five passes over each activation per step (airbench94,
    docs/fast.md). float32 math for a bfloat16 ``x``, rounded once. Values agree with
    :func:`gelu_exact`'s to float32 rounding (in bfloat16 they are closer to the exact
    function); gradients too (tests/test_fast_gelu.py). GPU/TPU programs are unchanged.
    """
    fast_dtype = x.dtype in (jnp.float32, jnp.bfloat16)
    if fast_dtype and lowering.cpu_kernels_on() and levers.current().fast_gelu:
        return _gelu_cpu(x)
    return gelu_exact(x)
