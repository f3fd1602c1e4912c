"""Direct (shifted-slice multiply-add) convolution for few-input-channel convs on XLA:CPU.

XLA:CPU's Eigen convolution is slow for LeNet's first layer, a 5x5 VALID conv from the
3-channel image to 6 channels (f32[512,32,32,3] x f32[5,5,3,6]): ~20 ms forward at batch
512 on 2 Zen5 cores, ~7x more than its 0.36 GFLOP need. :func:`conv_small_cin` writes the
forward as the sum over the kh*kw*cin taps of ``x[:, dy:dy+Ho, dx:dx+Wo, ci] * W[dy,dx,ci]``,
which XLA compiles into ONE loop fusion over the NHWC output (no intermediates, no
transposes; HWCN / CHWN / NCHW layouts measured the same, im2col and Toeplitz matmuls
slower): ~6-11 ms at b512 and ~2-4 ms at b128 (depending on load), 2-3.5x faster.

Two details make it pay off inside a whole train step:

* Materialization. A loop fusion is "cheap" to XLA, so it duplicates the 75-tap sum into
  every consumer (bias+relu, the pool's four strided views, the relu mask in the
  backward pass): the LeNet b512 step got 3x SLOWER. Computing the sum inside a
  ``lax.cond`` forces XLA to write it once. Both branches give the same values (the
  other branch is XLA's own conv, taken only if ``kernel[0,0,0,0]`` is NaN), so the
  predicate cannot change results; XLA just cannot fold it. (``lax.map`` over batch
  chunks and a 1-trip ``fori_loop`` also materialize, but add a zero-filled output
  buffer; ``optimization_barrier`` is removed by XLA:CPU; a division by an opaque 1, as
  in :func:`cifar_jax.kernels.fast_ops.conv_input`, was duplicated along with the sum.)
* Gradients. Autodiff of the tap sum gives 450 separate reductions (~80 ms at b512), so a
  ``custom_vjp`` computes both gradients with XLA's own convolution on the original
  ``x`` (kernel gradient ~3-7 ms at b512; the input gradient is dead code for a first
  layer, whose input is the image, and XLA drops it).

Values equal ``lax.conv_general_dilated`` up to summation order (rel. error ~1e-7);
gradients are exactly XLA's. :func:`use_small_cin` enables it only on the shape measured
faster (LeNet's first conv, batch 128 and 512); the seed models' 3x3 SAME 3->32 / 3->64
first convs were not faster once the kernel gradient is included, so they keep XLA's conv.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

_NHWC = ("NHWC", "HWIO", "NHWC")


def _xla_conv(x: jax.Array, kernel: jax.Array, stride: int, padding: int) -> jax.Array:
    return lax.conv_general_dilated(
        x,
        kernel,
        (stride, stride),
        ((padding, padding), (padding, padding)),
        dimension_numbers=_NHWC,
    )


def _tap_sum(x: jax.Array, kernel: jax.Array, stride: int, padding: int) -> jax.Array:
    """The convolution as sum over (dy, dx, ci) of a shifted (strided) input slice times
    the kernel row ``kernel[dy, dx, ci, :]``; XLA fuses it into a single loop."""
    if padding:
        x = jnp.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    kh, kw, cin, _ = kernel.shape
    _, h, w, _ = x.shape
    ho, wo = (h - kh) // stride + 1, (w - kw) // stride + 1
    acc = None
    for dy in range(kh):
        for dx in range(kw):
            window = x[
                :,
                dy : dy + stride * (ho - 1) + 1 : stride,
                dx : dx + stride * (wo - 1) + 1 : stride,
                :,
            ]
            for ci in range(cin):
                term = window[..., ci, None] * kernel[dy, dx, ci]
                acc = term if acc is None else acc + term
    return acc


def _materialized_tap_sum(x, kernel, stride, padding):
    # lax.cond makes XLA write the fused tap sum to memory once instead of recomputing
    # it in each consumer; the false branch (NaN kernel only) gives the same values.
    use_taps = jnp.logical_not(jnp.isnan(kernel.reshape(-1)[0]))
    return lax.cond(
        use_taps,
        functools.partial(_tap_sum, stride=stride, padding=padding),
        functools.partial(_xla_conv, stride=stride, padding=padding),
        x,
        kernel,
    )


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _conv(x, kernel, stride, padding):
    return _materialized_tap_sum(x, kernel, stride, padding)


def _conv_fwd(x, kernel, stride, padding):
    return _materialized_tap_sum(x, kernel, stride, padding), (x, kernel)


def _conv_bwd(stride, padding, residuals, g):
    x, kernel = residuals
    _, vjp = jax.vjp(functools.partial(_xla_conv, stride=stride, padding=padding), x, kernel)
    return vjp(g)


_conv.defvjp(_conv_fwd, _conv_bwd)


def conv_small_cin(x: jax.Array, kernel: jax.Array, stride: int, padding: int) -> jax.Array:
    """NHWC x HWIO convolution with symmetric zero ``padding`` and square ``stride``,
    computed as a direct tap sum (see module docstring); gradients wrt ``x`` and
    ``kernel`` are XLA's convolution gradients. Equal to
    ``lax.conv_general_dilated(x, kernel, (stride, stride), ((padding, padding),) * 2,
    dimension_numbers=("NHWC", "HWIO", "NHWC"))`` up to float summation order."""
    return _conv(x, kernel, int(stride), int(padding))


def use_small_cin(
    x_shape: tuple[int, ...],
    kernel_shape: tuple[int, ...],
    stride: int,
    padding: int,
) -> bool:
    """Whether :func:`conv_small_cin` is faster than XLA's conv on CPU: only the shape it
    was measured faster on, LeNet's first conv (5x5 VALID stride 1, 3 -> 6 channels, on
    32x32 images, batch 128-512). Not for the 3x3 SAME 3->32/64 first convs (no faster
    once the kernel gradient is counted)."""
    if len(x_shape) != 4 or len(kernel_shape) != 4:
        return False
    n, h, w, cin = x_shape
    return (
        tuple(kernel_shape) == (5, 5, 3, 6)
        and cin == 3
        and (h, w) == (32, 32)
        and 128 <= n <= 512
        and stride == 1
        and padding == 0
    )
