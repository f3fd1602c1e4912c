"""Test-time augmentation: average the softmax of a few transformed copies of each image.

Modes (``config.tta`` for the final test evaluation of a run, ``--tta`` for the
evaluate / predict commands):

* ``none``: the image as is;
* ``flip``: the image and its left-right mirror (2 views);
* ``flip_translate``: the image and its mirror, each unshifted and shifted by
  ``TRANSLATE_PIXELS`` pixels up, down, left and right with zero (black) padding, like
  the training crop's constant padding (10 views).

The views are built on the device from the uint8 batch, inside the jitted step, and the
model runs on all of them at once (``vmap`` over views); the batch stays sharded over the
``data`` mesh axis as in training. The prediction is ``argmax`` of the mean probability,
and the loss is the cross-entropy of that mean probability.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from cifar_jax import metrics
from cifar_jax.data import pipeline
from cifar_jax.errors import ConfigError

TTA_MODES = ("none", "flip", "flip_translate")
TRANSLATE_PIXELS = 2
# (dy, dx) shifts of flip_translate, applied to the image and to its mirror.
SHIFTS = (
    (0, 0),
    (TRANSLATE_PIXELS, 0),
    (-TRANSLATE_PIXELS, 0),
    (0, TRANSLATE_PIXELS),
    (0, -TRANSLATE_PIXELS),
)


def check_mode(mode: str) -> str:
    if mode not in TTA_MODES:
        raise ConfigError(f"tta={mode!r} is not known; use one of {list(TTA_MODES)}.")
    return mode


def num_views(mode: str) -> int:
    return {"none": 1, "flip": 2, "flip_translate": 2 * len(SHIFTS)}[check_mode(mode)]


def translate(images: jnp.ndarray, dy: int, dx: int) -> jnp.ndarray:
    """Shifts NHWC images by ``dy`` rows down and ``dx`` columns right, filling with 0."""
    _, h, w, _ = images.shape
    p = max(abs(dy), abs(dx))
    if p == 0:
        return images
    padded = jnp.pad(images, ((0, 0), (p, p), (p, p), (0, 0)))
    return padded[:, p - dy : p - dy + h, p - dx : p - dx + w, :]


def views(images: jnp.ndarray, mode: str) -> jnp.ndarray:
    """The TTA views of a NHWC batch, stacked on a new leading axis: (V, N, H, W, C)."""
    check_mode(mode)
    if mode == "none":
        return images[None]
    mirrored = images[:, :, ::-1, :]
    if mode == "flip":
        return jnp.stack([images, mirrored])
    return jnp.stack([translate(x, dy, dx) for x in (images, mirrored) for dy, dx in SHIFTS])


def make_probs_fn(
    model: nn.Module, mean: np.ndarray, std: np.ndarray, mode: str
) -> Callable[[dict[str, Any], jnp.ndarray], jnp.ndarray]:
    """``probs(variables, uint8 images) -> (N, C)`` mean softmax over the TTA views."""
    check_mode(mode)

    def probs(variables: dict[str, Any], images: jnp.ndarray) -> jnp.ndarray:
        def one_view(x: jnp.ndarray) -> jnp.ndarray:
            logits = model.apply(variables, pipeline.normalize(x, mean, std), train=False)
            return jax.nn.softmax(logits.astype(jnp.float32), axis=-1)

        if mode == "none":
            return one_view(images)
        return jax.vmap(one_view)(views(images, mode)).mean(axis=0)

    return probs


def make_predict_step(
    model: nn.Module, mean: np.ndarray, std: np.ndarray, mode: str = "none"
) -> Callable[[Any, dict], jnp.ndarray]:
    """``predict_step(state, batch) -> probs (N, C)`` for a (padded) batch of uint8 images."""
    probs_fn = make_probs_fn(model, mean, std, mode)

    def predict_step(state: Any, batch: dict) -> jnp.ndarray:
        return probs_fn(state.variables(), batch["image"])

    return predict_step


def make_eval_step(
    model: nn.Module, mean: np.ndarray, std: np.ndarray, mode: str
) -> Callable[[Any, dict], metrics.EvalMetrics]:
    """Like ``train.make_eval_step`` but on the mean TTA probability (padding masked)."""
    probs_fn = make_probs_fn(model, mean, std, mode)

    def eval_step(state: Any, batch: dict) -> metrics.EvalMetrics:
        probs = probs_fn(state.variables(), batch["image"])
        log_probs = jnp.log(jnp.maximum(probs, 1e-12))
        per_example = -jnp.take_along_axis(log_probs, batch["label"][:, None], axis=-1)[:, 0]
        return metrics.batch_metrics(
            metrics.EvalMetrics, log_probs, batch["label"], per_example, mask=batch["mask"]
        )

    return eval_step


__all__ = [
    "SHIFTS",
    "TRANSLATE_PIXELS",
    "TTA_MODES",
    "check_mode",
    "make_eval_step",
    "make_predict_step",
    "make_probs_fn",
    "num_views",
    "translate",
    "views",
]
