"""Building blocks shared by the model families: conv-BN-act, residual block, MLP head.

Parameter-free steps (pooling, flatten) are tiny modules too, so they show up as rows in
the per-layer summary; their arithmetic lives in :mod:`cifar_jax.models.layers`.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from cifar_jax.models import layers
from cifar_jax.models.layers import LayerOptions


class ConvBNAct(nn.Module):
    """conv -> [BatchNorm] -> activation, torch-style padding (``None`` = kernel // 2)."""

    features: int
    kernel_size: int = 3
    stride: int = 1
    padding: int | None = None
    use_bias: bool = True
    batch_norm: bool = True
    options: LayerOptions = LayerOptions()

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        pad = self.kernel_size // 2 if self.padding is None else self.padding
        x = layers.conv(
            self.features,
            self.kernel_size,
            in_features=x.shape[-1],
            stride=self.stride,
            padding=pad,
            use_bias=self.use_bias,
            init=self.options.kernel_init,
            dtype=self.options.dtype,
            name="conv",
        )(x)
        if self.batch_norm:
            x = layers.batch_norm(
                train=train, momentum=self.options.bn_momentum, dtype=self.options.dtype, name="bn"
            )(x)
        return layers.Activation(self.options.activation, name="act")(x)


class BasicBlock(nn.Module):
    """The two-conv ResNet block of all five reports (bias-free convs followed by BN).

    The shortcut is a 1x1 conv + BN projection when stride or width changes, the identity
    otherwise. Without BatchNorm the convs get biases instead, as torch code usually does.
    """

    features: int
    stride: int = 1
    batch_norm: bool = True
    options: LayerOptions = LayerOptions()

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        opts = self.options
        use_bias = not self.batch_norm

        def norm(y: jax.Array, name: str) -> jax.Array:
            if not self.batch_norm:
                return y
            return layers.batch_norm(
                train=train, momentum=opts.bn_momentum, dtype=opts.dtype, name=name
            )(y)

        in_features = x.shape[-1]
        out = layers.conv(
            self.features,
            3,
            in_features=in_features,
            stride=self.stride,
            padding=1,
            use_bias=use_bias,
            init=opts.kernel_init,
            dtype=opts.dtype,
            name="conv1",
        )(x)
        out = layers.Activation(opts.activation, name="act1")(norm(out, "bn1"))
        out = layers.conv(
            self.features,
            3,
            in_features=self.features,
            stride=1,
            padding=1,
            use_bias=use_bias,
            init=opts.kernel_init,
            dtype=opts.dtype,
            name="conv2",
        )(out)
        out = norm(out, "bn2")
        shortcut = x
        if self.stride != 1 or in_features != self.features:
            shortcut = layers.conv(
                self.features,
                1,
                in_features=in_features,
                stride=self.stride,
                padding=0,
                use_bias=use_bias,
                init=opts.kernel_init,
                dtype=opts.dtype,
                name="shortcut_conv",
            )(x)
            shortcut = norm(shortcut, "shortcut_bn")
        return layers.Activation(opts.activation, name="act2")(out + shortcut)


class MLPHead(nn.Module):
    """Classifier: [dropout] -> (dense -> BN/act -> [dropout]) per hidden width -> dense.

    ``bn_before_act`` picks the order of BN and activation in hidden layers: the reports
    use both (dense-BN-act in 000/002/003, dense-act-BN in 001's baseline).
    """

    num_classes: int
    hidden: tuple[int, ...] = ()
    batch_norm: bool = False
    bn_before_act: bool = True
    dropout_rate: float = 0.0
    input_dropout_rate: float = 0.0
    options: LayerOptions = LayerOptions()

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        opts = self.options
        if self.input_dropout_rate > 0:
            x = layers.dropout(self.input_dropout_rate, name="dropout_in")(
                x, deterministic=not train
            )
        for i, width in enumerate(self.hidden, start=1):
            x = layers.dense(width, in_features=x.shape[-1], dtype=opts.dtype, name=f"fc{i}")(x)
            act = layers.Activation(opts.activation, name=f"act{i}")
            if self.batch_norm:
                bn = layers.batch_norm(
                    train=train, momentum=opts.bn_momentum, dtype=opts.dtype, name=f"bn{i}"
                )
                x = act(bn(x)) if self.bn_before_act else bn(act(x))
            else:
                x = act(x)
            if self.dropout_rate > 0:
                x = layers.dropout(self.dropout_rate, name=f"dropout{i}")(
                    x, deterministic=not train
                )
        logits = layers.dense(
            self.num_classes,
            in_features=x.shape[-1],
            dtype=opts.dtype,
            name=f"fc{len(self.hidden) + 1}",
        )(x)
        # The logits in float32 whatever the compute dtype: the loss, its gradient and
        # every metric are float32 (config.half_precision).
        return logits.astype(jnp.float32)


class MaxPool2x2(nn.Module):
    """2x2/stride-2 max-pool (see :func:`layers.max_pool2x2`)."""

    deterministic: bool = False

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        return layers.max_pool2x2(x, self.deterministic)


class Flatten(nn.Module):
    """Flatten in torch's NCHW order (see :func:`layers.flatten_nchw`)."""

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        return layers.flatten_nchw(x)


class GlobalAvgPool(nn.Module):
    """Mean over height and width: torch's AdaptiveAvgPool2d(1) + flatten."""

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        return jnp.mean(x, axis=(1, 2))
