"""The small layer helpers every model is built from.

Each operation whose formulation we may want to change later (convolution, max-pooling,
flatten order, initializers, activations) is created in exactly one function here, so a
faster or differently-initialised variant is a one-line change for all 15 models.
"""

from __future__ import annotations

import dataclasses
import math
import types
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from cifar_jax import kernels
from cifar_jax.errors import ConfigError

# ------------------------------------------------------------------ activations
# Names accepted by ``config.activation``. Every one except prelu is parameter-free.
# prelu has one learnable slope per activation site (like torch's ``nn.PReLU()``), so it
# adds trainable parameters: the counts in REPRODUCTION.md are for the reports' own
# activation (relu, or gelu for the final 001 ResNet).
ACTIVATIONS: tuple[str, ...] = (
    "relu",
    "leaky_relu",
    "elu",
    "gelu",
    "silu",
    "mish",
    "prelu",
)

_ACTIVATION_FUNCTIONS: types.MappingProxyType[str, Callable[[jax.Array], jax.Array]] = (
    types.MappingProxyType(
        {
            "relu": jax.nn.relu,
            # torch.nn.LeakyReLU's default slope (flax/jax also default to 0.01).
            "leaky_relu": lambda x: jax.nn.leaky_relu(x, negative_slope=0.01),
            "elu": jax.nn.elu,
            # torch.nn.GELU's default is the exact erf form, not the tanh approximation
            # (with a hand-written gradient on CPU: cifar_jax.kernels.gelu).
            "gelu": kernels.gelu,
            "silu": jax.nn.silu,
            "mish": jax.nn.mish,
        }
    )
)

PRELU_INIT = 0.25  # torch.nn.PReLU's default initial slope.


def check_activation(name: str) -> str:
    """Return ``name`` if it is a known activation, else raise a ConfigError naming the fix."""
    if name not in ACTIVATIONS:
        raise ConfigError(
            f"Unknown activation {name!r}. Allowed values: {', '.join(ACTIVATIONS)}. "
            f"Fix: set --config.activation to one of them."
        )
    return name


class Activation(nn.Module):
    """One activation site. A module (not a function) so prelu can own its slope."""

    kind: str = "relu"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kind = check_activation(self.kind)
        if kind == "prelu":
            slope = self.param("negative_slope", nn.initializers.constant(PRELU_INIT), ())
            return jnp.where(x >= 0, x, slope.astype(x.dtype) * x)
        return _ACTIVATION_FUNCTIONS[kind](x)


# ------------------------------------------------------------------ initializers
KERNEL_INITS: tuple[str, ...] = ("pytorch", "kaiming")


def check_kernel_init(name: str) -> str:
    """Return ``name`` if it is a known init scheme, else raise a ConfigError."""
    if name not in KERNEL_INITS:
        raise ConfigError(
            f"Unknown kernel_init {name!r}. Allowed values: {', '.join(KERNEL_INITS)}. "
            f"Fix: set --config.kernel_init to one of them."
        )
    return name


def torch_uniform_bias_init(fan_in: int) -> nn.initializers.Initializer:
    """torch's default bias init: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    bound = 1.0 / math.sqrt(fan_in)

    def init(key: jax.Array, shape, dtype=jnp.float32) -> jax.Array:
        return jax.random.uniform(key, shape, dtype, minval=-bound, maxval=bound)

    return init


# torch's default weight init, kaiming_uniform(a=sqrt(5)): gain^2 = 2 / (1 + 5) = 1/3, so
# U(-b, b) with b = sqrt(3 * (1/3) / fan_in) = 1/sqrt(fan_in).
_TORCH_KERNEL_INIT = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")
# torchvision ResNets: kaiming_normal_(mode="fan_out", nonlinearity="relu"), untruncated.
_KAIMING_CONV_INIT = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


def dirac_kernel_init(base: nn.initializers.Initializer) -> nn.initializers.Initializer:
    """``base`` with filter ``o`` of the first ``in_channels`` outputs set to the identity
    on input channel ``o`` (torch ``nn.init.dirac_(w[:w.size(1)])``); HWIO kernels."""

    def init(key: jax.Array, shape, dtype=jnp.float32) -> jax.Array:
        kh, kw, cin, cout = shape
        kernel = base(key, shape, dtype)
        n = min(cin, cout)
        identity = jnp.zeros((kh, kw, cin, n), dtype).at[kh // 2, kw // 2].set(jnp.eye(cin, n))
        return kernel.at[..., :n].set(identity)

    return init


# ------------------------------------------------------------------ layers
def conv(
    features: int,
    kernel_size: int,
    *,
    in_features: int,
    stride: int = 1,
    padding: int = 0,
    use_bias: bool = True,
    init: str = "pytorch",
    dirac: bool = False,
    dtype: Any = jnp.float32,
    name: str | None = None,
) -> nn.Module:
    """A square 2-D convolution with torch semantics: symmetric zero padding of ``padding``.

    Explicit symmetric padding (not flax's "SAME") keeps strided convs aligned like torch's.
    ``in_features`` is only needed for torch's fan-in dependent bias init. ``init`` is
    "pytorch" (torch's default uniform weight and bias init) or "kaiming" (He normal,
    fan_out, zero bias, as torchvision ResNets). ``dirac`` replaces the first
    ``in_features`` filters by the identity (torch ``dirac_``, as airbench). This is the one
    place convolutions are created, so a faster conv path can be swapped in here.
    ``dtype`` is the compute dtype (flax's: input and kernel are cast to it, the output
    has it; ``jnp.bfloat16`` for config.half_precision); params stay float32.
    """
    check_kernel_init(init)
    fan_in = in_features * kernel_size * kernel_size
    if init == "pytorch":
        kernel_init, bias_init = _TORCH_KERNEL_INIT, torch_uniform_bias_init(fan_in)
    else:
        kernel_init, bias_init = _KAIMING_CONV_INIT, nn.initializers.zeros
    if dirac:  # the first in_features filters start as the identity (airbench)
        kernel_init = dirac_kernel_init(kernel_init)
    return nn.Conv(
        features,
        (kernel_size, kernel_size),
        strides=(stride, stride),
        padding=((padding, padding), (padding, padding)),
        use_bias=use_bias,
        kernel_init=kernel_init,
        bias_init=bias_init,
        dtype=dtype,
        param_dtype=jnp.float32,
        # CPU: oneDNN / im2col / tap-sum convs, XLA convs' inputs kept in memory
        # (kernels.conv_general_dilated); GPU/TPU: plain lax.conv_general_dilated. Same
        # params and values either way.
        conv_general_dilated=kernels.conv_general_dilated,
        name=name,
    )


def _unit_std(init: Callable) -> Callable:
    def initializer(key, shape, dtype=jnp.float32):
        w = init(key, shape, dtype)
        return w / jnp.std(w, ddof=1)

    return initializer


def dense(
    features: int,
    *,
    in_features: int,
    use_bias: bool = True,
    unit_std: bool = False,
    dtype: Any = jnp.float32,
    name: str | None = None,
) -> nn.Module:
    """A fully connected layer with torch's default (nn.Linear) init.

    torchvision keeps the Linear default even when convs use Kaiming init, so this does
    not depend on ``kernel_init``. ``unit_std``: the kernel is then divided by its own
    standard deviation (airbench94_muon's ``w *= 1 / w.std()``, torch's unbiased std).
    ``dtype``: the compute dtype (params stay float32).
    """
    return nn.Dense(
        features,
        use_bias=use_bias,
        kernel_init=_unit_std(_TORCH_KERNEL_INIT) if unit_std else _TORCH_KERNEL_INIT,
        bias_init=torch_uniform_bias_init(in_features),
        dtype=dtype,
        param_dtype=jnp.float32,
        name=name,
    )


class BatchNorm(nn.Module):
    """flax ``nn.BatchNorm`` over the last axis: the same variables (params ``scale``,
    ``bias``; batch_stats ``mean``, ``var``), values and running-average update, but the
    training form is :func:`cifar_jax.kernels.batch_norm_train`, whose gradient is hand-written
    on CPU (train steps ~4% faster). Checkpoints are interchangeable with
    ``nn.BatchNorm``'s.

    ``dtype`` is the output's dtype, as flax's (None: that of ``x``, scale and bias
    promoted). Statistics, running averages, scale and bias are always float32: with
    bfloat16 activations the mean, variance and normalization are computed in float32
    and only the result is bfloat16.
    """

    use_running_average: bool
    momentum: float = 0.9
    epsilon: float = 1e-5
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        features = (x.shape[-1],)
        ra_mean = self.variable("batch_stats", "mean", jnp.zeros, features, jnp.float32)
        ra_var = self.variable("batch_stats", "var", jnp.ones, features, jnp.float32)
        scale = self.param("scale", nn.initializers.ones, features, jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, features, jnp.float32)
        if self.use_running_average:
            return kernels.normalize(
                x, ra_mean.value, ra_var.value, scale, bias, self.epsilon, self.dtype
            )
        y, mean, var = kernels.batch_norm_train(x, scale, bias, self.epsilon, self.dtype)
        if not self.is_initializing():
            m = self.momentum
            ra_mean.value = m * ra_mean.value + (1 - m) * mean
            ra_var.value = m * ra_var.value + (1 - m) * var
        return y


def batch_norm(
    *, train: bool, momentum: float, dtype: Any = None, name: str | None = None
) -> nn.Module:
    """BatchNorm with torch's epsilon; batch statistics in training, running ones in eval.
    ``dtype``: the output's (see :class:`BatchNorm`; statistics stay float32)."""
    return BatchNorm(
        use_running_average=not train, momentum=momentum, epsilon=1e-5, dtype=dtype, name=name
    )


def dropout(rate: float, *, spatial: bool = False, name: str | None = None) -> nn.Module:
    """Dropout; ``spatial=True`` drops whole channels of NHWC maps (torch's Dropout2d)."""
    return nn.Dropout(rate, broadcast_dims=(1, 2) if spatial else (), name=name)


# ------------------------------------------------------------------ pooling
def max_pool2x2(x: jax.Array, deterministic: bool = False) -> jax.Array:
    """The 2x2/stride-2 max-pool every model uses (torch's ``MaxPool2d(2)``); its
    formulation per platform is :func:`cifar_jax.kernels.max_pool2x2`'s. ``deterministic``
    (config.deterministic): no select-and-scatter, which has no deterministic GPU kernel."""
    return kernels.max_pool2x2(x, deterministic)


def flatten_nchw(x: jax.Array) -> jax.Array:
    """Flatten NHWC maps in torch's NCHW order, so fc weights line up with torch's."""
    return jnp.transpose(x, (0, 3, 1, 2)).reshape(x.shape[0], -1)


# ------------------------------------------------------------------ shared options
@dataclasses.dataclass(frozen=True)
class LayerOptions:
    """Settings shared by every layer of a model (hashable, so a valid module field)."""

    activation: str = "relu"
    kernel_init: str = "pytorch"
    bn_momentum: float = 0.9
    # config.deterministic: max-pool without select-and-scatter on every backend.
    deterministic_pool: bool = False
    # Compute dtype of convs, dense layers and BatchNorm outputs (config.half_precision:
    # jnp.bfloat16). Params, BatchNorm statistics and the logits stay float32.
    dtype: Any = jnp.float32
