"""The 15 models of REPRODUCTION.md as flax.linen modules (NHWC in, logits out).

Usage::

    model = build_model(config, num_classes=10)
    variables = model.init({"params": k1, "dropout": k2}, x, train=False)
    logits, updates = model.apply(variables, x, train=True, rngs={"dropout": k3},
                                  mutable=["batch_stats"])

Models without BatchNorm have no ``batch_stats`` collection.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import jax

from cifar_jax.models.layers import ACTIVATIONS, KERNEL_INITS, max_pool2x2
from cifar_jax.models.registry import MODEL_NAMES, build_model, model_description


def count_trainable_params(params: Any) -> int:
    """Number of trainable values: every leaf of the ``params`` collection.

    Accepts ``variables['params']`` or the whole ``variables`` dict (only its ``params``
    are counted: BatchNorm running statistics are not trainable, as in torch). Works on
    arrays and on ``jax.ShapeDtypeStruct`` leaves from ``jax.eval_shape``.
    """
    if isinstance(params, Mapping) and "params" in params:
        params = params["params"]
    return sum(math.prod(leaf.shape) for leaf in jax.tree_util.tree_leaves(params))


__all__ = [
    "ACTIVATIONS",
    "KERNEL_INITS",
    "MODEL_NAMES",
    "build_model",
    "count_trainable_params",
    "max_pool2x2",
    "model_description",
]
