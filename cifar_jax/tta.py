"""Test-time augmentation: average the predictions of a few transformed copies of each image.

Modes (``config.tta`` for the final test evaluation of a run, ``--tta`` for the
evaluate / predict commands):

* ``none``: the image as is;
* ``flip``: the image and its left-right mirror (2 views);
* ``flip_translate``: the image and its mirror, each unshifted and shifted by
  ``TRANSLATE_PIXELS`` pixels up, down, left and right with zero (black) padding, like
  the training crop's constant padding (10 views);
* ``airbench``: airbench94's level-2 TTA (``infer_mirror_translate``), 6 views:
  ``0.5 mirror(x) + 0.25 mirror(shift_a(x)) + 0.25 mirror(shift_b(x))`` with
  ``mirror(z) = 0.5 net(z) + 0.5 net(flip_lr(z))``; ``shift_a`` / ``shift_b`` are the
  H x W windows at offsets (0, 0) and (2, 2) of the image reflect-padded by 1 pixel
  (the image moved 1 pixel down-right / up-left, the border mirrored without repeating
  the edge pixel, torch's ``F.pad(mode="reflect")``). Unlike the modes above it
  averages LOGITS, not probabilities (as airbench does), with the weights
  ``LOGIT_WEIGHTS["airbench"]`` (they sum to 1); its probability is the softmax of
  that weighted logit.

The views are built on the device from the uint8 batch, inside the jitted step, and the
model runs on all of them at once (``vmap`` over views); the batch stays sharded over the
``data`` mesh axis as in training. Mirroring and reflect padding only copy pixels, so
``airbench``'s views of the uint8 batch, normalized, equal airbench's views of the
normalized batch (``flip_translate``'s zero padding, by contrast, pads with black, uint8
0, before normalization, as the training crop does). The prediction is ``argmax`` of
the mean probability (for ``airbench``: of the softmax of the weighted logits, the same
argmax as the logits), and the loss is the cross-entropy of that probability.
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

TTA_MODES = ("none", "flip", "flip_translate", "airbench")
TRANSLATE_PIXELS = 2
# (dy, dx) shifts of flip_translate, applied to the image and to its mirror.
SHIFTS = (
    (0, 0),
    (TRANSLATE_PIXELS, 0),
    (-TRANSLATE_PIXELS, 0),
    (0, TRANSLATE_PIXELS),
    (0, -TRANSLATE_PIXELS),
)
# Modes that average logits instead of probabilities: the weight of each of their views
# (in the order of :func:`views`).
LOGIT_WEIGHTS = {
    # x, flip(x), shift_a(x), flip(shift_a(x)), shift_b(x), flip(shift_b(x)):
    # 0.5 mirror(x) + 0.25 mirror(shift_a(x)) + 0.25 mirror(shift_b(x)).
    "airbench": (0.25, 0.25, 0.125, 0.125, 0.125, 0.125),
}
# airbench's reflect padding and the offsets of its two shifted windows.
AIRBENCH_PAD = 1
AIRBENCH_OFFSETS = ((0, 0), (2, 2))


def check_mode(mode: str) -> str:
    if mode not in TTA_MODES:
        raise ConfigError(f"tta={mode!r} is not known; use one of {list(TTA_MODES)}.")
    return mode


def num_views(mode: str) -> int:
    counts = {"none": 1, "flip": 2, "flip_translate": 2 * len(SHIFTS)}
    counts["airbench"] = len(LOGIT_WEIGHTS["airbench"])
    return counts[check_mode(mode)]


def translate(images: jnp.ndarray, dy: int, dx: int) -> jnp.ndarray:
    """Shifts NHWC images by ``dy`` rows down and ``dx`` columns right, filling with 0."""
    _, h, w, _ = images.shape
    p = max(abs(dy), abs(dx))
    if p == 0:
        return images
    padded = jnp.pad(images, ((0, 0), (p, p), (p, p), (0, 0)))
    return padded[:, p - dy : p - dy + h, p - dx : p - dx + w, :]


def reflect_window(images: jnp.ndarray, pad: int, dy: int, dx: int) -> jnp.ndarray:
    """The H x W window at offset (``dy``, ``dx``) of NHWC ``images`` reflect-padded by
    ``pad`` on each side (torch ``F.pad(x, (pad,) * 4, "reflect")[..., dy:dy+H, dx:dx+W]``;
    offset (pad, pad) is the image itself)."""
    _, h, w, _ = images.shape
    padded = jnp.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="reflect")
    return padded[:, dy : dy + h, dx : dx + w, :]


def views(images: jnp.ndarray, mode: str) -> jnp.ndarray:
    """The TTA views of a NHWC batch, stacked on a new leading axis: (V, N, H, W, C)."""
    check_mode(mode)
    if mode == "none":
        return images[None]
    mirrored = images[:, :, ::-1, :]
    if mode == "flip":
        return jnp.stack([images, mirrored])
    if mode == "airbench":
        shifted = [reflect_window(images, AIRBENCH_PAD, dy, dx) for dy, dx in AIRBENCH_OFFSETS]
        return jnp.stack([v for x in (images, *shifted) for v in (x, x[:, :, ::-1, :])])
    return jnp.stack([translate(x, dy, dx) for x in (images, mirrored) for dy, dx in SHIFTS])


def make_probs_fn(
    model: nn.Module, mean: np.ndarray, std: np.ndarray, mode: str
) -> Callable[[dict[str, Any], jnp.ndarray], jnp.ndarray]:
    """``probs(variables, uint8 images) -> (N, C)``: the mean softmax over the TTA views,
    or for the logit-averaging modes (``LOGIT_WEIGHTS``) the softmax of the weighted mean
    of the views' logits."""
    check_mode(mode)

    def probs(variables: dict[str, Any], images: jnp.ndarray) -> jnp.ndarray:
        def view_logits(x: jnp.ndarray) -> jnp.ndarray:
            logits = model.apply(variables, pipeline.normalize(x, mean, std), train=False)
            return logits.astype(jnp.float32)

        def one_view(x: jnp.ndarray) -> jnp.ndarray:
            return jax.nn.softmax(view_logits(x), axis=-1)

        if mode == "none":
            return one_view(images)
        if mode in LOGIT_WEIGHTS:
            weights = jnp.asarray(LOGIT_WEIGHTS[mode], jnp.float32)
            logits = jax.vmap(view_logits)(views(images, mode))  # (V, N, C)
            return jax.nn.softmax(jnp.tensordot(weights, logits, axes=1), axis=-1)
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
    """Like ``steps.make_eval_step`` but on the mean TTA probability (padding masked)."""
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
    "AIRBENCH_OFFSETS",
    "AIRBENCH_PAD",
    "LOGIT_WEIGHTS",
    "SHIFTS",
    "TRANSLATE_PIXELS",
    "TTA_MODES",
    "check_mode",
    "make_eval_step",
    "make_predict_step",
    "make_probs_fn",
    "num_views",
    "reflect_window",
    "translate",
    "views",
]
