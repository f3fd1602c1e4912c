"""Seeded cuts of a split: class subsets, stratified validation, balanced subsets, stats."""

from __future__ import annotations

import numpy as np
import pytest

from cifar_jax.data import (
    ArraySplit,
    balanced_subset,
    channel_mean_std,
    class_subset,
    stratified_split,
)
from cifar_jax.errors import ConfigError


def make_split(class_counts: list[int], seed: int = 0) -> ArraySplit:
    """Shuffled labels with the given per-class counts; pixel (0, 0) encodes the index."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(len(class_counts)), class_counts).astype(np.int32)
    rng.shuffle(labels)
    n = labels.shape[0]
    images = rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)
    images[:, 0, 0, 0] = np.arange(n) % 256
    images[:, 0, 0, 1] = np.arange(n) // 256
    return ArraySplit(images=images, labels=labels)


def ids(split: ArraySplit) -> np.ndarray:
    """The original index of each example (from its pixel (0, 0))."""
    return split.images[:, 0, 0, 0].astype(np.int64) + 256 * split.images[:, 0, 0, 1].astype(
        np.int64
    )


def test_array_split_checks_its_arrays():
    split = make_split([3, 4])
    assert len(split) == 7
    with pytest.raises(ValueError, match="uint8"):
        ArraySplit(images=split.images.astype(np.float32), labels=split.labels)
    with pytest.raises(ValueError, match="int32"):
        ArraySplit(images=split.images, labels=split.labels.astype(np.int64))
    with pytest.raises(ValueError, match="C-contiguous"):
        ArraySplit(images=np.asfortranarray(split.images), labels=split.labels)


def test_class_subset_keeps_first_classes_in_order():
    split = make_split([5, 6, 7, 8])
    subset = class_subset(split, 2)
    assert sorted(set(subset.labels.tolist())) == [0, 1] and len(subset) == 11
    expected = np.flatnonzero(split.labels < 2)
    np.testing.assert_array_equal(ids(subset), expected)
    np.testing.assert_array_equal(subset.labels, split.labels[expected])
    assert len(class_subset(split, 4)) == len(split)
    for bad in (0, 5):
        with pytest.raises(ConfigError, match=f"class_subset={bad}"):
            class_subset(split, bad)


def test_stratified_split_proportions_disjoint_and_ordered():
    split = make_split([100, 200, 300, 400])
    train, val = stratified_split(split, 100, seed=0)
    assert np.bincount(val.labels).tolist() == [10, 20, 30, 40]
    assert np.bincount(train.labels).tolist() == [90, 180, 270, 360]
    train_ids, val_ids = ids(train), ids(val)
    assert np.intersect1d(train_ids, val_ids).size == 0
    np.testing.assert_array_equal(np.sort(np.concatenate([train_ids, val_ids])), np.arange(1000))
    assert np.all(np.diff(train_ids) > 0) and np.all(np.diff(val_ids) > 0)  # original order
    np.testing.assert_array_equal(val.labels, split.labels[val_ids])


def test_stratified_split_rounds_to_the_exact_size():
    split = make_split([3, 3, 3, 7])
    train, val = stratified_split(split, 5, seed=1)
    counts = np.bincount(val.labels, minlength=4)
    assert len(val) == 5 and len(train) == 11
    # Exact shares are 0.9375 x3 and 2.1875: largest remainders round the first three up.
    assert counts.tolist() == [1, 1, 1, 2]


def test_stratified_split_is_seeded():
    split = make_split([50, 50, 50])
    _, val_a = stratified_split(split, 30, seed=7)
    _, val_b = stratified_split(split, 30, seed=7)
    _, val_c = stratified_split(split, 30, seed=8)
    np.testing.assert_array_equal(ids(val_a), ids(val_b))
    assert not np.array_equal(ids(val_a), ids(val_c))
    assert np.bincount(val_c.labels).tolist() == [10, 10, 10]


@pytest.mark.parametrize("size", [0, -1, 150, 151])
def test_stratified_split_bad_sizes(size):
    with pytest.raises(ConfigError, match=f"val_examples={size}"):
        stratified_split(make_split([50, 50, 50]), size, seed=0)


def test_balanced_subset_counts():
    split = make_split([100, 200, 300, 400])
    assert np.bincount(balanced_subset(split, 40, seed=0).labels).tolist() == [10] * 4
    counts = np.bincount(balanced_subset(split, 42, seed=0).labels).tolist()
    assert sum(counts) == 42 and max(counts) - min(counts) == 1
    # A class with too few examples gives all it has; the others share the rest equally.
    small = make_split([5, 100, 100])
    assert np.bincount(balanced_subset(small, 65, seed=0).labels).tolist() == [5, 30, 30]
    assert len(balanced_subset(small, 205, seed=0)) == 205


def test_balanced_subset_is_seeded_and_ordered():
    split = make_split([60, 60, 60])
    a, b = balanced_subset(split, 30, seed=3), balanced_subset(split, 30, seed=3)
    c = balanced_subset(split, 30, seed=4)
    np.testing.assert_array_equal(ids(a), ids(b))
    assert not np.array_equal(ids(a), ids(c))
    assert np.all(np.diff(ids(a)) > 0)
    np.testing.assert_array_equal(a.images, split.images[ids(a)])


@pytest.mark.parametrize("size", [0, 181])
def test_balanced_subset_bad_sizes(size):
    with pytest.raises(ConfigError, match="max_train_examples"):
        balanced_subset(make_split([60, 60, 60]), size, seed=0)


def test_channel_mean_std_matches_float64_reference():
    images = make_split([300, 300, 133], seed=5).images  # not a multiple of the chunk size
    mean, std = channel_mean_std(images)
    pixels = images.reshape(-1, 3).astype(np.float64) / 255.0
    np.testing.assert_allclose(mean, pixels.mean(0), rtol=1e-12)
    np.testing.assert_allclose(std, pixels.std(0), rtol=1e-10)
