"""The Grain pipeline: shuffling, augmentation, eval padding, resumable iteration."""

import numpy as np
import pytest

from cifar_jax import config as config_lib
from cifar_jax.data import ArraySplit, pipeline
from cifar_jax.errors import ConfigError


def _split(n: int = 100, seed: int = 0) -> ArraySplit:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)
    # Stamp the index into pixel (0, 0) so tests can tell which example a row came from.
    images[:, 0, 0, 0] = np.arange(n) % 256
    return ArraySplit(images=images, labels=(np.arange(n) % 10).astype(np.int32))


NO_AUG = pipeline.AugmentConfig()
CROP_FLIP = pipeline.AugmentConfig(crop_padding=4, flip=True)


def _batches(split, n_steps, aug=NO_AUG, batch=16, seed=0, **kw):
    ds = pipeline.train_dataset(
        split, global_batch_size=batch, num_steps=n_steps, seed=seed, aug=aug, **kw
    )
    return [ds[i] for i in range(n_steps)]


def test_each_epoch_is_a_permutation_and_epochs_differ():
    split = _split(100)
    per_epoch = 100 // 16
    batches = _batches(split, 2 * per_epoch)
    first = np.concatenate([b["image"][:, 0, 0, 0] for b in batches[:per_epoch]])
    second = np.concatenate([b["image"][:, 0, 0, 0] for b in batches[per_epoch:]])
    assert len(set(first.tolist())) == per_epoch * 16  # no repeats within an epoch
    assert len(set(second.tolist())) == per_epoch * 16
    assert not np.array_equal(first, second)  # reshuffled per epoch


def test_same_seed_same_batches_other_seed_differs():
    split = _split()
    a = _batches(split, 3, CROP_FLIP, seed=1)
    b = _batches(split, 3, CROP_FLIP, seed=1)
    c = _batches(split, 3, CROP_FLIP, seed=2)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x["image"], y["image"])
        np.testing.assert_array_equal(x["label"], y["label"])
    assert not np.array_equal(a[0]["image"], c[0]["image"])


def test_labels_follow_their_images():
    split = _split()
    for b in _batches(split, 4):
        idx = b["image"][:, 0, 0, 0]
        np.testing.assert_array_equal(b["label"], split.labels[idx])


def test_process_slices_tile_the_global_batch():
    split = _split()
    whole = _batches(split, 2, CROP_FLIP, batch=16)
    parts = [
        _batches(split, 2, CROP_FLIP, batch=16, process_index=p, process_count=4) for p in range(4)
    ]
    for step in range(2):
        joined = np.concatenate([parts[p][step]["image"] for p in range(4)])
        np.testing.assert_array_equal(joined, whole[step]["image"])


def test_random_crop_keeps_shape_and_offset_center_is_identity():
    images = _split(8).images
    centered = pipeline.random_crop(images, np.full((8, 2), 4), 4)
    np.testing.assert_array_equal(centered, images)
    shifted = pipeline.random_crop(images, np.zeros((8, 2), int), 4)
    assert shifted.shape == images.shape
    # Offset (0, 0) moves the image 4 pixels down-right and fills the border with zeros.
    np.testing.assert_array_equal(shifted[:, 4:, 4:], images[:, :28, :28])
    assert not shifted[:, :4].any()
    reflected = pipeline.random_crop(images, np.zeros((8, 2), int), 4, "reflect")
    np.testing.assert_array_equal(reflected[:, 3, 4:], images[:, 1, :28])


def test_flip_is_a_mirror_and_twice_is_identity():
    images = _split(6).images
    flags = np.array([True, False, True, False, True, True])
    flipped = pipeline.random_flip(images, flags)
    np.testing.assert_array_equal(flipped[0], images[0, :, ::-1])
    np.testing.assert_array_equal(flipped[1], images[1])
    np.testing.assert_array_equal(pipeline.random_flip(flipped, flags), images)


def test_augmentation_changes_train_images_but_keeps_dtype():
    split = _split()
    plain = _batches(split, 1)[0]
    aug = _batches(split, 1, CROP_FLIP)[0]
    np.testing.assert_array_equal(plain["label"], aug["label"])
    assert aug["image"].dtype == np.uint8 and aug["image"].shape == plain["image"].shape
    assert not np.array_equal(plain["image"], aug["image"])


def test_eval_sees_every_example_once_with_padding_masked():
    split = _split(50)
    ds = pipeline.eval_dataset(split, global_batch_size=16)
    batches = list(ds)
    assert len(batches) == 4
    masks = np.concatenate([b["mask"] for b in batches])
    assert masks.sum() == 50 and not masks[50:].any()
    seen = np.concatenate([b["image"] for b in batches])[masks]
    np.testing.assert_array_equal(seen, split.images)  # in order, unaugmented
    assert list(pipeline.eval_dataset(split, global_batch_size=16))[0]["image"].tobytes() == (
        batches[0]["image"].tobytes()
    )


def test_iterator_state_resumes_exactly():
    split = _split()
    ds = pipeline.train_dataset(split, global_batch_size=16, num_steps=12, seed=0, aug=CROP_FLIP)
    it = pipeline.iterate(ds, prefetch=3)
    pipeline.take(it, 5)
    state = it.get_state()
    rest = pipeline.take(it, 7)
    resumed = pipeline.iterate(ds, prefetch=3)
    resumed.set_state(state)
    for a, b in zip(rest, pipeline.take(resumed, 7), strict=True):
        np.testing.assert_array_equal(a["image"], b["image"])


def test_batch_errors_are_clear():
    with pytest.raises(ConfigError, match="larger than the training split"):
        pipeline.train_dataset(_split(10), global_batch_size=16, num_steps=1, seed=0, aug=NO_AUG)
    with pytest.raises(ConfigError, match="cannot be split over 3 processes"):
        pipeline.process_slice(16, 0, 3)


def test_normalize_matches_formula():
    images = _split(4).images
    mean, std = np.array([0.4, 0.5, 0.6]), np.array([0.2, 0.25, 0.3])
    got = np.asarray(pipeline.normalize(images, mean, std))
    want = (images / 255.0 - mean) / std
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_normalization_stats_half_and_unknown():
    config = config_lib.base_config()
    config.normalization = "half"
    mean, std = pipeline.normalization_stats(config, (0.1, 0.2, 0.3), (0.3, 0.3, 0.3))
    np.testing.assert_array_equal(mean, [0.5] * 3)
    config.normalization = "bogus"
    with pytest.raises(ConfigError, match="normalization"):
        pipeline.normalization_stats(config, (0,) * 3, (1,) * 3)


def test_config_train_dataset_is_the_runs_pipeline():
    config = config_lib.base_config()
    config.update(dict(batch_size=10, seed=3, random_flip=True, random_crop_padding=2))
    split, mean = _split(), np.zeros(3)
    built = pipeline.config_train_dataset(config, split, mean, num_steps=4)
    explicit = pipeline.train_dataset(
        split,
        global_batch_size=10,
        num_steps=4,
        seed=3,
        aug=pipeline.AugmentConfig.from_config(config, mean=mean),
    )
    assert len(built) == 4
    for step in range(4):
        for key in ("image", "label"):
            np.testing.assert_array_equal(built[step][key], explicit[step][key])
    config.seed = 4
    other = pipeline.config_train_dataset(config, split, mean, num_steps=4)
    assert not np.array_equal(other[0]["image"], built[0]["image"])
