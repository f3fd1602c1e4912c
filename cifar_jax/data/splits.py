"""In-memory splits and the seeded ways to cut them: class subsets, validation, subsets.

Every cut is a pure function of (split, size, seed), so two runs with the same config see
the same images, and keeps the examples it selects in their original order (the input
pipeline shuffles; keeping the order makes the cut easy to check and to reproduce).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from cifar_jax.errors import ConfigError

IMAGE_SHAPE = (32, 32, 3)

# Independent random streams per use, so changing e.g. val_examples does not change
# which images max_train_examples picks for a different purpose of the same seed.
_STREAM_VAL = 1
_STREAM_SUBSET = 2


@dataclasses.dataclass(frozen=True, eq=False)
class ArraySplit:
    """One split held in memory: uint8 NHWC images and int32 labels of the same length."""

    images: np.ndarray  # uint8, (N, 32, 32, 3), C-contiguous
    labels: np.ndarray  # int32, (N,)

    def __post_init__(self) -> None:
        images, labels = self.images, self.labels
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != IMAGE_SHAPE:
            raise ValueError(
                f"ArraySplit images must be uint8 (N, 32, 32, 3), got {images.dtype} {images.shape}"
            )
        if not images.flags.c_contiguous:
            raise ValueError("ArraySplit images must be C-contiguous (use np.ascontiguousarray)")
        if labels.dtype != np.int32 or labels.shape != (images.shape[0],):
            raise ValueError(
                f"ArraySplit labels must be int32 ({images.shape[0]},), got {labels.dtype} "
                f"{labels.shape}"
            )

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def take(self, indices: np.ndarray) -> ArraySplit:
        """The examples at ``indices`` (a copy, in the given order)."""
        return ArraySplit(
            images=np.ascontiguousarray(self.images[indices]),
            labels=np.ascontiguousarray(self.labels[indices]),
        )


def _rng(stream: int, seed: int) -> np.random.Generator:
    # SeedSequence wants non-negative entropy; the mask keeps negative seeds distinct.
    return np.random.default_rng(np.random.SeedSequence([stream, int(seed) & (2**64 - 1)]))


def _pick_per_class(
    labels: np.ndarray, classes: np.ndarray, quota: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Boolean mask choosing ``quota[i]`` random examples of ``classes[i]``, vectorised."""
    keys = rng.random(labels.shape[0])
    order = np.lexsort((keys, labels))  # grouped by class, random order inside a class
    sorted_labels = labels[order]
    starts = np.searchsorted(sorted_labels, classes)
    class_pos = np.searchsorted(classes, sorted_labels)
    rank = np.arange(labels.shape[0]) - starts[class_pos]
    mask = np.zeros(labels.shape[0], dtype=bool)
    mask[order] = rank < quota[class_pos]
    return mask


def class_subset(split: ArraySplit, num_classes: int) -> ArraySplit:
    """Keep only labels ``0..num_classes-1`` (order preserved, labels unchanged).

    Used for quick experiments on fewer classes; the labels stay valid class indices.
    """
    num_present = int(split.labels.max()) + 1 if len(split) else 0
    if num_classes <= 0 or num_classes > num_present:
        raise ConfigError(
            f"class_subset={num_classes} is not between 1 and the {num_present} classes of "
            f"the data; set --config.class_subset to a value in 1..{num_present} "
            "(0 keeps all classes)"
        )
    return split.take(np.flatnonzero(split.labels < num_classes))


def stratified_split(
    split: ArraySplit, val_examples: int, seed: int
) -> tuple[ArraySplit, ArraySplit]:
    """Cut a seeded validation split whose class proportions match the whole split.

    Each class gives ``val_examples * count / total`` examples, rounded by largest
    remainder so the sizes add up exactly. Returns ``(train, val)``, disjoint.
    """
    total = len(split)
    if not 0 < val_examples < total:
        raise ConfigError(
            f"val_examples={val_examples} must be between 1 and {total - 1}: the training "
            f"split has only {total} examples; lower --config.val_examples (0 = no "
            "validation split)"
        )
    classes, counts = np.unique(split.labels, return_counts=True)
    # Exact integer largest-remainder rounding of counts * val_examples / total.
    quota = counts * val_examples // total
    remainder = counts * val_examples % total
    extra = val_examples - int(quota.sum())
    order = np.lexsort((classes, -remainder))  # largest remainder first, ties by class
    quota[order[:extra]] += 1
    in_val = _pick_per_class(split.labels, classes, quota, _rng(_STREAM_VAL, seed))
    return split.take(np.flatnonzero(~in_val)), split.take(np.flatnonzero(in_val))


def _balanced_quota(counts: np.ndarray, n: int) -> np.ndarray:
    """Per-class sizes as equal as possible, never more than a class has (water filling)."""
    quota = np.zeros_like(counts)
    remaining = n
    # Smallest classes first: what they cannot give is shared among the larger ones.
    order = np.lexsort((np.arange(counts.shape[0]), counts))
    for i, k in enumerate(order):
        quota[k] = min(int(counts[k]), remaining // (counts.shape[0] - i))
        remaining -= int(quota[k])
    assert remaining == 0, (counts, n)
    return quota


def balanced_subset(split: ArraySplit, n: int, seed: int) -> ArraySplit:
    """A seeded subset of ``n`` examples with (as near as possible) equal counts per class.

    Training on a small, balanced subset is the usual way to study data efficiency; the
    result is deterministic for a seed.
    """
    if not 0 < n <= len(split):
        raise ConfigError(
            f"a balanced subset of {n} examples cannot be taken from a split of "
            f"{len(split)}; set --config.max_train_examples between 1 and {len(split)}"
        )
    classes, counts = np.unique(split.labels, return_counts=True)
    quota = _balanced_quota(counts, n)
    keep = _pick_per_class(split.labels, classes, quota, _rng(_STREAM_SUBSET, seed))
    return split.take(np.flatnonzero(keep))


def channel_mean_std(
    images: np.ndarray, chunk: int = 256
) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """Per-channel mean and (population) std of uint8 NHWC images, scaled to [0, 1].

    Exact integer sums over small chunks (uint32 cannot overflow within 256 images:
    256 * 255**2 < 2**32), so no float copy of the data set is made; ~40 ms for 50k images.
    """
    if images.shape[0] == 0:
        raise ValueError("cannot compute mean/std of an empty split")
    flat = images.reshape(images.shape[0], -1)  # (N, H*W*3), channel fastest
    sums = np.zeros(flat.shape[1], dtype=np.uint64)
    squares = np.zeros(flat.shape[1], dtype=np.uint64)
    for start in range(0, flat.shape[0], chunk):
        pixels = flat[start : start + chunk].astype(np.uint32)
        sums += pixels.sum(axis=0, dtype=np.uint32)
        pixels *= pixels
        squares += pixels.sum(axis=0, dtype=np.uint32)
    count = flat.shape[0] * (flat.shape[1] // 3)
    mean = sums.reshape(-1, 3).sum(axis=0).astype(np.float64) / count
    mean_square = squares.reshape(-1, 3).sum(axis=0).astype(np.float64) / count
    std = np.sqrt(np.maximum(mean_square - mean**2, 0.0))
    m, s = mean / 255.0, std / 255.0
    return (float(m[0]), float(m[1]), float(m[2])), (float(s[0]), float(s[1]), float(s[2]))
