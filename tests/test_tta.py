"""Test-time augmentation modes of cifar_jax.tta with small known "nets": airbench94's
logit-weighted mirror + translate TTA, by hand and against torch's reflect padding."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from cifar_jax import config as config_lib
from cifar_jax import tta, validation
from cifar_jax.data import pipeline
from cifar_jax.errors import ConfigError

MEAN = np.array([0.49, 0.48, 0.45], np.float32)
STD = np.array([0.25, 0.24, 0.26], np.float32)
NUM_CLASSES = 5


class LinearNet(nn.Module):
    """logits = flatten(x) @ W + b: a known linear function of the (normalized) image."""

    @nn.compact
    def __call__(self, x, train: bool = False):
        return nn.Dense(NUM_CLASSES)(x.reshape(x.shape[0], -1))


def _images(n=4, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def net():
    model = LinearNet()
    variables = model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
    # Larger weights than the init's, so the classes' probabilities are far from uniform
    # and averaging logits differs clearly from averaging probabilities.
    variables = jax.tree.map(lambda v: v * 30.0, variables)
    kernel = np.asarray(variables["params"]["Dense_0"]["kernel"], np.float64)
    bias = np.asarray(variables["params"]["Dense_0"]["bias"], np.float64)
    return model, variables, kernel, bias


def _logits_by_hand(images, kernel, bias):
    x = (images.astype(np.float64) / 255.0 - MEAN) / STD
    return x.reshape(len(x), -1) @ kernel + bias


def _softmax(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _airbench_views_by_hand(images):
    """airbench94's infer_mirror_translate views, in numpy: x, its two 1-pixel reflect
    shifts (windows (0, 0) and (2, 2) of the padded image), each with its mirror."""
    padded = np.pad(images, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="reflect")
    shift_a, shift_b = padded[:, 0:32, 0:32], padded[:, 2:34, 2:34]
    mirror = lambda z: z[:, :, ::-1]  # noqa: E731
    return {
        "x": images,
        "flip_x": mirror(images),
        "a": shift_a,
        "flip_a": mirror(shift_a),
        "b": shift_b,
        "flip_b": mirror(shift_b),
    }


def test_weights_sum_to_one_and_match_the_views():
    for mode, weights in tta.LOGIT_WEIGHTS.items():
        assert sum(weights) == pytest.approx(1.0)
        assert len(weights) == tta.num_views(mode)
    assert tta.num_views("airbench") == 6
    assert tta.views(jnp.asarray(_images(2)), "airbench").shape == (6, 2, 32, 32, 3)


def test_airbench_mode_is_the_weighted_sum_of_the_six_views_logits(net):
    model, variables, kernel, bias = net
    images = _images()
    v = {k: _logits_by_hand(x, kernel, bias) for k, x in _airbench_views_by_hand(images).items()}
    mirror = {k: 0.5 * v[k] + 0.5 * v["flip_" + k] for k in ("x", "a", "b")}
    logits = 0.5 * mirror["x"] + 0.25 * mirror["a"] + 0.25 * mirror["b"]
    probs = np.asarray(jax.jit(tta.make_probs_fn(model, MEAN, STD, "airbench"))(variables, images))
    np.testing.assert_allclose(probs, _softmax(logits), rtol=2e-4, atol=1e-6)
    # Logits are averaged, not probabilities (the other modes' rule gives another answer).
    prob_mean = sum(
        w * _softmax(v[k])
        for w, k in zip(tta.LOGIT_WEIGHTS["airbench"], v, strict=True)  # views' order
    )
    assert np.abs(prob_mean - probs).max() > 1e-2


def test_views_are_computed_in_airbenchs_order(net):
    images = _images(3)
    ours = np.asarray(tta.views(jnp.asarray(images), "airbench"))
    for k, view in enumerate(_airbench_views_by_hand(images).values()):
        np.testing.assert_array_equal(ours[k], view)


def test_shifted_views_match_torch_reflect_padding():
    torch = pytest.importorskip("torch")
    import torch.nn.functional as F

    images = _images(3)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float()
    padded = F.pad(x, (1,) * 4, mode="reflect")
    torch_views = [
        x,
        x.flip(-1),
        padded[:, :, 0:32, 0:32],
        padded[:, :, 0:32, 0:32].flip(-1),
        padded[:, :, 2:34, 2:34],
        padded[:, :, 2:34, 2:34].flip(-1),
    ]
    ours = np.asarray(tta.views(jnp.asarray(images), "airbench"))
    for k, view in enumerate(torch_views):
        np.testing.assert_array_equal(ours[k], view.permute(0, 2, 3, 1).numpy())
    # Normalizing then padding equals padding then normalizing (padding copies pixels).
    normalized = pipeline.normalize(jnp.asarray(images), MEAN, STD)
    np.testing.assert_allclose(
        np.asarray(tta.reflect_window(normalized, 1, 2, 2)),
        np.asarray(pipeline.normalize(tta.reflect_window(jnp.asarray(images), 1, 2, 2), MEAN, STD)),
    )


def test_a_net_blind_to_flips_and_shifts_gives_the_plain_prediction(net):
    model, variables, _, _ = net
    # Images of one colour each: mirrors and reflect shifts leave them unchanged.
    colours = np.random.default_rng(1).integers(0, 256, (4, 1, 1, 3), dtype=np.uint8)
    images = np.broadcast_to(colours, (4, 32, 32, 3)).copy()
    plain = tta.make_probs_fn(model, MEAN, STD, "none")(variables, images)
    both = tta.make_probs_fn(model, MEAN, STD, "airbench")(variables, images)
    np.testing.assert_allclose(np.asarray(both), np.asarray(plain), rtol=1e-5, atol=1e-7)


def test_a_net_that_sums_the_image_sees_through_mirrors():
    """A net of the per-channel sums ignores flips: airbench = the plain prediction on x
    for weight 1/2 and on its shifts for 1/4 each (their sums differ at the borders)."""

    class SumNet(nn.Module):
        @nn.compact
        def __call__(self, x, train: bool = False):
            return nn.Dense(NUM_CLASSES)(x.sum(axis=(1, 2)))

    model = SumNet()
    variables = model.init(jax.random.key(1), jnp.zeros((1, 32, 32, 3)))
    images = _images(3)
    views = _airbench_views_by_hand(images)

    def logits(x):
        return model.apply(variables, pipeline.normalize(jnp.asarray(x), MEAN, STD))

    expected = jax.nn.softmax(
        0.5 * logits(views["x"]) + 0.25 * logits(views["a"]) + 0.25 * logits(views["b"])
    )
    got = tta.make_probs_fn(model, MEAN, STD, "airbench")(variables, images)
    np.testing.assert_allclose(np.asarray(got), np.asarray(expected), rtol=1e-4, atol=1e-6)


def test_eval_step_scores_the_airbench_probability(net):
    model, variables, _, _ = net

    class State:
        def variables(self):
            return variables

    images = _images(4)
    batch = {
        "image": jnp.asarray(images),
        "label": jnp.array([0, 1, 2, 3]),
        "mask": jnp.array([True, True, True, False]),
    }
    probs = np.asarray(tta.make_predict_step(model, MEAN, STD, "airbench")(State(), batch))
    np.testing.assert_allclose(probs.sum(axis=-1), np.ones(4), rtol=1e-5)
    result = tta.make_eval_step(model, MEAN, STD, "airbench")(State(), batch).compute()
    real = np.arange(3)  # the 4th row is padding
    picked = np.maximum(probs[real, real], 1e-12)
    assert float(result["loss"]) == pytest.approx(-np.log(picked).mean(), rel=1e-4)
    assert float(result["accuracy"]) == pytest.approx(np.mean(probs[real].argmax(-1) == real))


def test_an_invalid_mode_is_a_config_error(net):
    model = net[0]
    with pytest.raises(ConfigError, match="tta='mirror'"):
        tta.check_mode("mirror")
    with pytest.raises(ConfigError, match="airbench"):  # the message lists the modes
        tta.make_probs_fn(model, MEAN, STD, "mirror")
    config = config_lib.base_config()
    config.tta = "airbench"
    validation.validate_config(config)
    config.tta = "mirror"
    with pytest.raises(ConfigError, match="tta="):
        validation.validate_config(config)
