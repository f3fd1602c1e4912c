"""airbench94's network (Keller Jordan, ``KellerJordan/cifar10-airbench``,
``legacy/airbench94.py``; arXiv 2404.00498), as a plain Flax module.

A 2x2 "whitening" conv stem (3 -> 24, no padding, with bias) whose kernel is set from the
training images (:func:`whitening_kernel`, applied by :meth:`AirbenchNet.init_from_data`)
and kept frozen, GELU, three groups of conv3x3 -> max-pool 2 -> BN -> GELU -> conv3x3 ->
BN -> GELU (widths 64/256/256), max-pool 3, a bias-free linear layer and the logits scaled
by 1/9. airbench94_muon.py's net is the same with the logits divided by the head's input
width (256) and the head's weights scaled to unit standard deviation at init.

Every 3x3 conv starts as torch's default init with its first ``in_channels`` filters
replaced by the identity (torch ``dirac_``), so each group starts by passing its input
through. The BatchNorm scales exist (the parameter count matches torch's, 1,972,792)
but the recipe freezes them at 1 (``configs/airbench94.py``, ``param_groups``).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from cifar_jax.models import layers
from cifar_jax.models.layers import LayerOptions

WHITEN_KERNEL = 2
WHITEN_WIDTH = 2 * 3 * WHITEN_KERNEL**2  # +/- each eigenvector of the 2x2x3 patches: 24


def whitening_kernel(images: np.ndarray, eps: float = 5e-4) -> np.ndarray:
    """The stem's 2x2 kernel (HWIO, 2x2x3x24) from normalized NHWC ``images``:
    the eigenvectors of the (uncentred) covariance of every 2x2 patch, each divided by
    sqrt(eigenvalue + eps), largest eigenvalue first, followed by their negatives
    (airbench's ``init_whitening_conv``). Computed in float64 on the host, so it is the
    same on every process and platform."""
    x = np.asarray(images, np.float64)
    n, h, w, c = x.shape
    k = WHITEN_KERNEL
    # Patches flattened in torch's (c, kh, kw) order, as airbench's unfold gives them.
    patches = np.stack(
        [x[:, i : h - k + 1 + i, j : w - k + 1 + j, :] for i in range(k) for j in range(k)],
        axis=-1,
    )  # n, h', w', c, k*k
    flat = patches.reshape(-1, c * k * k)
    covariance = flat.T @ flat / len(flat)
    eigenvalues, eigenvectors = np.linalg.eigh(covariance)  # ascending
    eigenvalues, eigenvectors = eigenvalues[::-1], eigenvectors[:, ::-1]
    filters = (eigenvectors / np.sqrt(eigenvalues + eps)).T  # (c*k*k filters, c*k*k)
    filters = np.concatenate([filters, -filters]).reshape(2 * c * k * k, c, k, k)
    return np.transpose(filters, (2, 3, 1, 0)).astype(np.float32)  # OIHW -> HWIO


class ConvGroup(nn.Module):
    """conv3x3 -> max-pool 2 -> BN -> act -> conv3x3 -> BN -> act."""

    width: int
    bn_epsilon: float
    options: LayerOptions

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        o = self.options
        for i in (1, 2):
            x = layers.conv(
                self.width, 3, in_features=x.shape[-1], padding=1, use_bias=False,
                dirac=True, dtype=o.dtype, name=f"conv{i}",
            )(x)  # fmt: skip
            if i == 1:
                x = layers.max_pool2x2(x, deterministic=o.deterministic_pool)
            x = layers.BatchNorm(
                use_running_average=not train, momentum=o.bn_momentum, epsilon=self.bn_epsilon,
                dtype=o.dtype, name=f"norm{i}",
            )(x)  # fmt: skip
            x = layers.Activation(o.activation)(x)
        return x


class AirbenchNet(nn.Module):
    """airbench94's net (see the module doc); ``widths`` of the three groups;
    ``logit_scale`` None = 1 / the last width (airbench94_muon's ``/ x.size(-1)``)."""

    num_classes: int
    widths: tuple[int, ...] = (64, 256, 256)
    logit_scale: float | None = 1 / 9
    head_unit_std: bool = False
    bn_epsilon: float = 1e-12
    options: LayerOptions = LayerOptions(activation="gelu", bn_momentum=0.6)

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        x = layers.conv(
            WHITEN_WIDTH, WHITEN_KERNEL, in_features=x.shape[-1], padding=0,
            dtype=self.options.dtype, name="whiten",
        )(x)  # fmt: skip
        x = layers.Activation(self.options.activation)(x)
        for i, width in enumerate(self.widths, start=1):
            x = ConvGroup(width, self.bn_epsilon, self.options, name=f"group{i}")(x, train)
        x = nn.max_pool(x, (3, 3), strides=(3, 3), padding="VALID")
        x = x.reshape(x.shape[0], -1)
        scale = 1 / x.shape[-1] if self.logit_scale is None else self.logit_scale
        x = layers.dense(
            self.num_classes, in_features=x.shape[-1], use_bias=False,
            unit_std=self.head_unit_std, dtype=self.options.dtype, name="head",
        )(x)  # fmt: skip
        # float32 logits whatever the compute dtype (config.half_precision).
        return x.astype(jnp.float32) * scale

    @staticmethod
    def init_from_data(params: dict, images: np.ndarray) -> dict:
        """``params`` with the stem's kernel set to :func:`whitening_kernel` of ``images``
        (normalized training images, NHWC), as airbench does before training."""
        whiten = dict(params["whiten"])
        whiten["kernel"] = jnp.asarray(whitening_kernel(images), whiten["kernel"].dtype)
        return {**params, "whiten": whiten}
