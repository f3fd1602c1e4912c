"""A narrowed seed model and its jitted train-mode loss and gradients, for tests that
compare two CPU formulations of the same ops inside a whole model."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from cifar_jax import config as config_lib
from cifar_jax import models


def narrow_model(name: str, **overrides):
    """(model, variables, a batch of 4 images) of config ``name`` with ``overrides``."""
    config = config_lib.base_config()
    config.model = name
    config.update(overrides)
    net = models.build_model(config, 10)
    x = jnp.asarray(np.random.default_rng(4).standard_normal((4, 32, 32, 3)), jnp.float32)
    variables = net.init({"params": jax.random.key(0), "dropout": jax.random.key(1)}, x)
    return net, variables, x


def train_loss_and_grads(net, variables, x):
    """The jitted (loss, grads) function of params: sum of squared train-mode logits."""

    def loss(params):
        out, _ = net.apply(
            {**variables, "params": params},
            x,
            train=True,
            rngs={"dropout": jax.random.key(2)},
            mutable=["batch_stats"],
        )
        return jnp.sum(out**2)

    return jax.jit(jax.value_and_grad(loss))
