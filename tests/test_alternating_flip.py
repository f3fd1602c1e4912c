"""airbench94's data side: the alternating flip (``flip_mode="alternating"``) of the
train pipeline, and the reflect padding of the random crop."""

import hashlib

import numpy as np
import pytest

from cifar_jax import config as config_lib
from cifar_jax import validation
from cifar_jax.data import ArraySplit, augment, pipeline
from cifar_jax.errors import ConfigError

N, BATCH = 128, 16
PER_EPOCH = N // BATCH
ALTERNATING = pipeline.AugmentConfig(flip=True, flip_mode="alternating")  # crop padding 0


def _split(n: int = N, seed: int = 0) -> ArraySplit:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)
    return ArraySplit(images=images, labels=(np.arange(n) % 10).astype(np.int32))


def _batches(split, steps, aug=ALTERNATING, seed=0, **kw):
    ds = pipeline.train_dataset(
        split, global_batch_size=BATCH, num_steps=max(steps) + 1, seed=seed, aug=aug, **kw
    )
    return [ds[s] for s in steps]


def _flipped_per_epoch(split, epochs, seed=0) -> list[np.ndarray]:
    """For each epoch, whether each example of ``split`` came out mirrored (exactly one of
    the source image or its mirror must match every row)."""
    lookup = {}
    for i, image in enumerate(split.images):
        lookup[image.tobytes()] = (i, False)
        lookup[np.ascontiguousarray(image[:, ::-1]).tobytes()] = (i, True)
    assert len(lookup) == 2 * len(split)  # no image equals another's mirror
    out = []
    for epoch in range(epochs):
        steps = range(epoch * PER_EPOCH, (epoch + 1) * PER_EPOCH)
        flipped = np.full(len(split), -1)
        for batch in _batches(split, steps, seed=seed):
            for row, label in zip(batch["image"], batch["label"], strict=True):
                index, was_flipped = lookup[row.tobytes()]
                assert label == split.labels[index]
                assert flipped[index] == -1  # each image once per epoch
                flipped[index] = was_flipped
        assert (flipped >= 0).all()  # every image once per epoch (N is a multiple of BATCH)
        out.append(flipped.astype(bool))
    return out


def test_each_image_is_flipped_in_exactly_one_of_two_consecutive_epochs():
    split = _split()
    e0, e1, e2, e3 = _flipped_per_epoch(split, 4)
    np.testing.assert_array_equal(e0 ^ e1, np.ones(N, bool))
    np.testing.assert_array_equal(e2, e0)
    np.testing.assert_array_equal(e3, e1)
    # Epoch 0 flips the per-image base flips, about half of the images.
    np.testing.assert_array_equal(e0, augment.base_flips(0, N))
    assert 0.35 * N < e0.sum() < 0.65 * N
    base = augment.base_flips(0, 50_000)
    assert 0.49 < base.mean() < 0.51


def test_base_flips_are_a_function_of_seed_and_index():
    a = augment.base_flips(3, 1000).copy()
    augment.base_flips.cache_clear()
    np.testing.assert_array_equal(augment.base_flips(3, 1000), a)
    assert not np.array_equal(augment.base_flips(4, 1000), a)
    # The first examples' flips do not depend on the split size (one draw per example).
    np.testing.assert_array_equal(augment.base_flips(3, 500), a[:500])
    with pytest.raises(ValueError):
        augment.base_flips(3, 1000)[0] = True  # cached and shared: read-only
    np.testing.assert_array_equal(augment.alternating_flips(a, 7), ~a)
    np.testing.assert_array_equal(augment.alternating_flips(a, 10), a)


def test_other_seed_other_flips():
    split = _split()
    (seed0,) = _flipped_per_epoch(split, 1, seed=0)
    (seed5,) = _flipped_per_epoch(split, 1, seed=5)
    assert not np.array_equal(seed0, seed5)


@pytest.mark.parametrize("crop", [0, 4])
def test_one_process_and_two_processes_see_the_same_images(crop):
    split = _split()
    aug = pipeline.AugmentConfig(
        crop_padding=crop, crop_padding_mode="reflect", flip=True, flip_mode="alternating"
    )
    steps = [0, 3, PER_EPOCH, PER_EPOCH + 5, 2 * PER_EPOCH + 1]
    whole = _batches(split, steps, aug)
    parts = [_batches(split, steps, aug, process_index=p, process_count=2) for p in range(2)]
    for k in range(len(steps)):
        for key in ("image", "label"):
            joined = np.concatenate([parts[0][k][key], parts[1][k][key]])
            np.testing.assert_array_equal(joined, whole[k][key])


def test_resume_at_a_later_step_gives_the_same_batch():
    split = _split()
    aug = pipeline.AugmentConfig(crop_padding=2, flip=True, flip_mode="alternating")
    later = 3 * PER_EPOCH + 2  # odd epoch
    run = _batches(split, range(later + 1), aug)
    augment.base_flips.cache_clear()  # a fresh process: nothing cached
    resumed = pipeline.train_dataset(
        split, global_batch_size=BATCH, num_steps=later + 4, seed=0, aug=aug
    )
    for step in (later, PER_EPOCH + 1):
        np.testing.assert_array_equal(resumed[step]["image"], run[step]["image"])
        np.testing.assert_array_equal(resumed[step]["label"], run[step]["label"])


# sha256 of 8 batches of 16 (seed 3, 64 random images) built by the code before
# flip_mode existed: the random flip (and everything drawn with it) is unchanged.
RANDOM_MODE_SHA256 = {
    "crop_flip": "0bb3c5237ecd64b24d21a848187f46efcb81ca3d7eb4cd56031bebd6ef47b230",
    "reflect_crop_flip_cutout": "211031efae402e4d440518eb2bde3f652239a7d10edf99f55ceaf22022ee28af",
}


@pytest.mark.parametrize("name", sorted(RANDOM_MODE_SHA256))
def test_random_mode_is_unchanged(name):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(64, 32, 32, 3), dtype=np.uint8)
    split = ArraySplit(images=images, labels=(np.arange(64) % 10).astype(np.int32))
    aug = {
        "crop_flip": pipeline.AugmentConfig(crop_padding=4, flip=True),
        "reflect_crop_flip_cutout": pipeline.AugmentConfig(
            crop_padding=4, crop_padding_mode="reflect", flip=True, cutout_size=8
        ),
    }[name]
    assert aug.flip_mode == "random"
    ds = pipeline.train_dataset(split, global_batch_size=16, num_steps=8, seed=3, aug=aug)
    h = hashlib.sha256()
    for step in range(8):
        batch = ds[step]
        h.update(batch["image"].tobytes())
        h.update(batch["label"].tobytes())
    assert h.hexdigest() == RANDOM_MODE_SHA256[name]


def test_config_fields_and_errors():
    config = config_lib.base_config()
    assert config.flip_mode == "random"
    assert pipeline.AugmentConfig.from_config(config).flip_mode == "random"
    config.flip_mode = "alternating"
    validation.validate_config(config)
    assert pipeline.AugmentConfig.from_config(config).flip_mode == "alternating"
    config.random_flip = False
    with pytest.raises(ConfigError, match="random_flip=True"):
        validation.validate_config(config)
    config.random_flip = True
    config.flip_mode = "sometimes"
    with pytest.raises(ConfigError, match="flip_mode='sometimes'"):
        validation.validate_config(config)
    # The config is checked once, by validate_config; an AugmentConfig built by hand with an
    # unknown mode fails where the flips are chosen instead of flipping as if alternating.
    bad = pipeline.AugmentConfig(flip=True, flip_mode="sometimes")
    u = augment.sample_params(np.random.default_rng(0), 4, bad)
    with pytest.raises(ValueError, match="flip_mode='sometimes'"):
        augment.apply_augmentations(_split(4).images, {**u, "flip_mask": np.ones(4, bool)}, bad)


def test_alternating_without_the_epoch_flips_is_an_error():
    images = _split(4).images
    u = augment.sample_params(np.random.default_rng(0), 4, ALTERNATING)
    with pytest.raises(ValueError, match="flip_mask"):
        augment.apply_augmentations(images, u, ALTERNATING)
    mask = np.array([True, False, False, True])
    out = augment.apply_augmentations(images, {**u, "flip_mask": mask}, ALTERNATING)
    np.testing.assert_array_equal(out, augment.random_flip(images, mask))


# ------------------------------------------------------------- reflect crop padding


def test_reflect_crop_padding_is_torch_reflect():
    """numpy's and torch's "reflect" both mirror about the edge pixel without repeating
    it: [1 2 3 4] padded by 2 is [3 2 1 2 3 4 3 2]."""
    row = np.array([1, 2, 3, 4], np.uint8)
    image = np.broadcast_to(row[None, :, None], (4, 4, 1)).copy()[None]  # (1, 4, 4, 1)
    left = augment.random_crop(image, np.array([[2, 0]]), 2, "reflect")
    np.testing.assert_array_equal(left[0, 0, :, 0], [3, 2, 1, 2])
    right = augment.random_crop(image, np.array([[2, 4]]), 2, "reflect")
    np.testing.assert_array_equal(right[0, 0, :, 0], [3, 4, 3, 2])


def test_reflect_crop_padding_matches_torch_pad():
    torch = pytest.importorskip("torch")
    import torch.nn.functional as F

    images = _split(6).images
    offsets = np.array([[0, 0], [8, 8], [0, 8], [3, 5], [4, 4], [8, 1]])
    ours = augment.random_crop(images, offsets, 4, "reflect")
    padded = F.pad(torch.from_numpy(images).permute(0, 3, 1, 2), (4, 4, 4, 4), mode="reflect")
    for k, (dy, dx) in enumerate(offsets):
        ref = padded[k, :, dy : dy + 32, dx : dx + 32].permute(1, 2, 0).numpy()
        np.testing.assert_array_equal(ours[k], ref)
