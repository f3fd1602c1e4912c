"""Grain input pipelines: seeded, resumable, and identical for any number of processes.

Train: a random-access dataset indexed by global step. Step ``s`` belongs to epoch
``s // steps_per_epoch``; each epoch is a fresh permutation of the training split seeded
by ``(seed, epoch)``, and the last partial batch of an epoch is dropped. Augmentation
is drawn per global batch from ``(seed, step)`` and applied vectorised to the batch,
which on CPU is several times faster than per-image maps. Every process draws the same
global-batch randomness and augments only its own slice of the batch, so 1 process and N
processes see exactly the same images. The ops are in :mod:`cifar_jax.data.augment`;
mixup / cutmix, which mix images across the batch, run in the jitted train step. With
``flip_mode="alternating"`` the flips are not drawn per batch: each image's base flip is
a function of ``(seed, example index)`` and each epoch flips exactly the images the
previous one did not (see :mod:`cifar_jax.data.augment`), so they too are the same for
any step, resume and process count.

Because a batch is a pure function of its step, the iterator state Grain checkpoints is
just the next index: a resumed run sees exactly the batches an uninterrupted run sees.

Batches stay uint8 on the host (4x less to copy than float32); normalization happens on
the device inside the jitted step (:func:`normalize`).

Eval: every example exactly once, in order; the last batch is padded and a ``mask``
marks the real examples so padding never reaches the metrics.
"""

from __future__ import annotations

import dataclasses
import math
import threading
from collections.abc import Iterator

import grain
import jax.numpy as jnp
import numpy as np

from cifar_jax.data import ArraySplit, augment
from cifar_jax.errors import ConfigError

# "none": pixels scaled to [0, 1] only (mean 0, std 1).
NORMALIZATIONS = ("mean_std", "half", "none")
# The augmentation settings live with the ops (augment imports nothing from here).
AugmentConfig = augment.AugmentConfig
CROP_PADDING_MODES = augment.CROP_PADDING_MODES


random_crop = augment.random_crop
random_flip = augment.random_flip


def augment_batch(images: np.ndarray, rng: np.random.Generator, aug: AugmentConfig) -> np.ndarray:
    """Applies the train augmentation to a whole batch with one draw of randomness."""
    return augment.apply_augmentations(images, augment.sample_params(rng, len(images), aug), aug)


def process_slice(global_batch_size: int, process_index: int, process_count: int) -> slice:
    """The rows of a global batch that one process loads."""
    if global_batch_size % process_count:
        raise ConfigError(
            f"batch_size={global_batch_size} cannot be split over {process_count} processes; "
            f"use a multiple of {process_count}."
        )
    local = global_batch_size // process_count
    return slice(process_index * local, (process_index + 1) * local)


@dataclasses.dataclass(frozen=True)
class _TrainBatch:
    """Maps a window ``(shuffled indices, epoch)`` to an augmented local batch (picklable).

    ``seed`` seeds the alternating flip's per-image base flips (unused in random mode).
    """

    split: ArraySplit
    aug: AugmentConfig
    rows: slice
    seed: int = 0

    def __call__(
        self, window: tuple[np.ndarray, int], rng: np.random.Generator
    ) -> dict[str, np.ndarray]:
        indices, epoch = window
        # The randomness is drawn for the global batch; each process augments its own rows.
        draws = augment.sample_params(rng, len(indices), self.aug)
        own = indices[self.rows]
        local = {k: v[self.rows] for k, v in draws.items()}
        if self.aug.flip and self.aug.flip_mode == "alternating":
            base = augment.base_flips(self.seed, len(self.split))
            local["flip_mask"] = augment.alternating_flips(base[own], epoch)
        images = augment.apply_augmentations(self.split.images[own], local, self.aug)
        return {"image": images, "label": self.split.labels[own]}


def steps_per_epoch(num_examples: int, global_batch_size: int) -> int:
    """Full batches per epoch (train drops the remainder)."""
    return num_examples // global_batch_size


def train_dataset(
    split: ArraySplit,
    *,
    global_batch_size: int,
    num_steps: int,
    seed: int,
    aug: AugmentConfig,
    process_index: int = 0,
    process_count: int = 1,
) -> grain.MapDataset:
    """The training batches, indexed by global step (0 .. num_steps - 1)."""
    rows = process_slice(global_batch_size, process_index, process_count)
    per_epoch = steps_per_epoch(len(split), global_batch_size)
    if per_epoch == 0:
        raise ConfigError(
            f"batch_size={global_batch_size} is larger than the training split "
            f"({len(split)} examples); use a smaller batch_size."
        )
    windows = grain.MapDataset.range(num_steps).map(
        _ShuffledWindow(len(split), per_epoch, global_batch_size, seed)
    )
    # `seed` makes random_map's per-index generator a function of (seed, step) only.
    return windows.seed(seed + 1).random_map(_TrainBatch(split, aug, rows, seed))


class _ShuffledWindow:
    """Maps a global step to the example indices of its batch and its epoch.

    Each epoch is its own seeded permutation of the split, a pure function of
    ``(seed, epoch)``; the permutation of the current epoch is cached (thread-safe) so
    a step costs one slice, not a shuffle.
    """

    def __init__(self, num_examples: int, per_epoch: int, batch_size: int, seed: int):
        self.num_examples = num_examples
        self.per_epoch = per_epoch
        self.batch_size = batch_size
        self.seed = seed
        self._lock = threading.Lock()
        self._cached: tuple[int, np.ndarray] = (-1, np.empty(0, np.int64))

    def permutation(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch]).permutation(self.num_examples)

    def __call__(self, step: int) -> tuple[np.ndarray, int]:
        epoch, within = divmod(int(step), self.per_epoch)
        with self._lock:
            if self._cached[0] != epoch:
                self._cached = (epoch, self.permutation(epoch))
            perm = self._cached[1]
        return perm[within * self.batch_size : (within + 1) * self.batch_size], epoch

    def __getstate__(self):  # picklable for Grain worker processes
        return {k: v for k, v in self.__dict__.items() if k not in ("_lock", "_cached")}

    def __setstate__(self, state):
        self.__init__(**state)


@dataclasses.dataclass(frozen=True)
class _EvalBatch:
    """Maps an eval batch number to its examples, padded to the batch size, plus a mask."""

    split: ArraySplit
    global_batch_size: int
    rows: slice

    def __call__(self, batch_index: int) -> dict[str, np.ndarray]:
        start = batch_index * self.global_batch_size
        idx = np.arange(start, start + self.global_batch_size)
        mask = idx < len(self.split)
        idx = np.where(mask, idx, 0)
        return {
            "image": np.ascontiguousarray(self.split.images[idx][self.rows]),
            "label": self.split.labels[idx][self.rows],
            "mask": mask[self.rows],
        }


def eval_dataset(
    split: ArraySplit,
    *,
    global_batch_size: int,
    process_index: int = 0,
    process_count: int = 1,
) -> grain.MapDataset:
    """Every example exactly once, in order; the last batch padded and masked."""
    rows = process_slice(global_batch_size, process_index, process_count)
    num_batches = math.ceil(len(split) / global_batch_size)
    return grain.MapDataset.range(num_batches).map(_EvalBatch(split, global_batch_size, rows))


def config_train_dataset(config, split: ArraySplit, mean, num_steps: int) -> grain.MapDataset:
    """:func:`train_dataset` as a run of ``config`` builds it (its batch size, seed and
    augmentation), for this process's slice of each global batch."""
    import jax

    return train_dataset(
        split,
        global_batch_size=config.batch_size,
        num_steps=num_steps,
        seed=config.seed,
        aug=AugmentConfig.from_config(config, mean=mean),
        process_index=jax.process_index(),
        process_count=jax.process_count(),
    )


def iterate(dataset: grain.MapDataset, prefetch: int) -> grain.DatasetIterator:
    """A checkpointable iterator that prepares ``prefetch`` batches ahead in threads."""
    options = grain.ReadOptions(num_threads=max(1, min(prefetch, 4)), prefetch_buffer_size=prefetch)
    return iter(dataset.to_iter_dataset(options))


def normalization_stats(config, mean, std) -> tuple[np.ndarray, np.ndarray]:
    """The (mean, std) in [0, 1] units that :func:`normalize` uses for this config."""
    if config.normalization == "mean_std":
        return np.asarray(mean, np.float32), np.asarray(std, np.float32)
    if config.normalization == "half":
        return np.full(3, 0.5, np.float32), np.full(3, 0.5, np.float32)
    if config.normalization == "none":  # x / 255, i.e. [0, 1]
        return np.zeros(3, np.float32), np.ones(3, np.float32)
    raise ConfigError(
        f"normalization={config.normalization!r} is not known; use one of {NORMALIZATIONS}."
    )


def normalize(images: jnp.ndarray, mean: np.ndarray, std: np.ndarray) -> jnp.ndarray:
    """uint8 NHWC -> float32 ``(x / 255 - mean) / std``, on the device."""
    scale = 1.0 / (255.0 * np.asarray(std, np.float32))
    shift = np.asarray(mean, np.float32) / np.asarray(std, np.float32)
    return images.astype(jnp.float32) * scale - shift


def take(iterator: Iterator, n: int) -> list:
    """The next ``n`` items of an iterator (a small helper for tests and tools)."""
    return [next(iterator) for _ in range(n)]
