"""What a run says about images: :class:`Predictions`, the probabilities of each image
over the run's classes with their names (``run.predict``'s result)."""

from __future__ import annotations

import dataclasses

import numpy as np

from cifar_jax.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Predictions:
    """What :meth:`cifar_jax.runs.LoadedRun.predict` returns: the probabilities of each
    image over the run's classes, and the classes' names."""

    probs: np.ndarray  # (N, C) float32, rows sum to 1
    class_names: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.probs)

    @property
    def indices(self) -> np.ndarray:
        """The most probable class of each image, (N,)."""
        return self.probs.argmax(-1)

    @property
    def classes(self) -> list[str]:
        """The name of the most probable class of each image."""
        return [self.class_names[i] for i in self.indices]

    def top_k(self, k: int = 5) -> list[list[tuple[str, float]]]:
        """Per image, the ``k`` most probable ``(class name, probability)``, best first."""
        if k < 1:
            raise ConfigError(f"top_k={k} must be >= 1.")
        order = np.argsort(-self.probs, axis=-1, kind="stable")[:, :k]
        return [[(self.class_names[i], float(p[i])) for i in row] for row, p in
                zip(order, self.probs, strict=True)]  # fmt: skip


__all__ = ["Predictions"]
