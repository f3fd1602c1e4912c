"""CPU kernels (oneDNN convolutions, im2col and tap-sum convs, the index max-pool, the
hand-written BatchNorm and GELU gradients, conv inputs kept in memory), chosen per lowering
platform, so GPU/TPU programs never see them.

The model side uses this interface only, and only from ``cifar_jax.models.layers``
(tests/test_layout.py checks it): the architecture says what the net is, the kernels how
XLA:CPU computes it.

* :func:`conv_general_dilated`: drop-in for ``lax.conv_general_dilated`` (flax
  ``nn.Conv(conv_general_dilated=)``); picks oneDNN / im2col / tap sum / XLA on CPU and
  keeps XLA convs' inputs in memory (:func:`conv_input`).
* :func:`max_pool2x2`: 2x2/stride-2 max-pool (index form on CPU or when deterministic).
* :func:`batch_norm_train`, :func:`normalize`: training- and eval-mode BatchNorm.
* :func:`gelu`: exact GELU (hand-written gradient on CPU).
* :func:`cpu_kernels_on`, :func:`platform_step`: which branch is being traced
  (:mod:`cifar_jax.kernels.lowering`); :func:`batch_sharded_over`: the batch mesh the
  oneDNN convs run per shard of (:mod:`cifar_jax.kernels.onednn`).
* :mod:`cifar_jax.kernels.levers`: the switches that turn each CPU form off at trace time.
* :func:`conv_backend`, :func:`half_precision_note`: what runs this process's convs and
  its bf16 compute, for the trainer's log and ``results.json``;
  :func:`half_precision_fallback_reason`: why a ``half_precision_fallback`` run computes
  in float32 here (None where bf16 is kept).
"""

from cifar_jax.kernels import levers
from cifar_jax.kernels.fast_ops import (
    batch_norm_train,
    conv_general_dilated,
    conv_input,
    gelu,
    max_pool2x2,
    normalize,
)
from cifar_jax.kernels.lowering import cpu_kernels_on, platform_step
from cifar_jax.kernels.onednn import (
    batch_sharded_over,
    conv_backend,
    half_precision_fallback_reason,
    half_precision_note,
)

__all__ = [
    "batch_norm_train",
    "batch_sharded_over",
    "conv_general_dilated",
    "conv_backend",
    "conv_input",
    "cpu_kernels_on",
    "gelu",
    "half_precision_fallback_reason",
    "half_precision_note",
    "levers",
    "max_pool2x2",
    "normalize",
    "platform_step",
]
