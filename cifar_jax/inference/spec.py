"""The inference spec: what classifying an image with a trained run needs besides its
weights.

A training run writes ``inference.json`` next to its checkpoints (:func:`write_spec`):
the class names, the data set, label type and class subset they come from, the
normalization mean/std, the input shape, the model id and the resolved config. With it a
workdir copied to another machine classifies images without its data set
(:func:`cifar_jax.runs.load_run` reads it, :func:`read_spec`). Where the data set is read
after all (``run.dataset``, the export check's test images), :func:`load_data` checks that
its classes are the ones the run was trained on.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from cifar_jax.errors import CifarJaxError, DataError

if TYPE_CHECKING:
    import ml_collections

SPEC_FILE = "inference.json"
SPEC_VERSION = 1
IMAGE_SHAPE = (32, 32, 3)
INPUT = "uint8 RGB pixels 0-255, shape (N, 32, 32, 3) (NHWC)"
OUTPUT = "float32 softmax probabilities, shape (N, num_classes), in class_names order"
_SPEC_FIX = (
    "Restore it, or delete it and run python -m cifar_jax evaluate where the run's data set "
    "is, which writes it again."
)


@dataclasses.dataclass(frozen=True)
class InferenceSpec:
    """What classifying an image with a run needs besides its weights."""

    model: str
    class_names: tuple[str, ...]
    dataset: str  # cifar10 / cifar100
    label_type: str  # fine / coarse (cifar100)
    class_subset: int  # 0 = every class; else the first N classes
    normalization: str  # config.normalization
    mean: tuple[float, float, float]  # [0, 1] units, what the model was trained with
    std: tuple[float, float, float]
    data_source: str  # where the training images came from (human-readable)
    config: dict[str, Any]  # the resolved config
    image_shape: tuple[int, int, int] = IMAGE_SHAPE
    input: str = INPUT
    output: str = OUTPUT
    version: int = SPEC_VERSION

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @classmethod
    def of_run(
        cls,
        config: Any,
        class_names: Sequence[str],
        mean: np.ndarray,
        std: np.ndarray,
        data_source: str,
    ) -> InferenceSpec:
        """The spec of a run of ``config`` on data with these classes and normalization."""
        return cls(
            model=str(config.model),
            class_names=tuple(str(n) for n in class_names),
            dataset=str(config.dataset),
            label_type=str(config.label_type),
            class_subset=int(config.class_subset),
            normalization=str(config.normalization),
            mean=tuple(float(x) for x in np.asarray(mean).reshape(3)),
            std=tuple(float(x) for x in np.asarray(std).reshape(3)),
            data_source=str(data_source),
            config=json.loads(json.dumps(config.to_dict())),  # tuples -> lists, as on disk
        )

    def to_json(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["num_classes"] = self.num_classes
        return out

    @classmethod
    def from_json(cls, values: Any, where: str) -> InferenceSpec:
        """The spec saved in ``where``; a CifarJaxError naming the problem if it is not one."""
        fields = {f.name for f in dataclasses.fields(cls)}
        required = {f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING}
        if not isinstance(values, dict) or not required <= set(values):
            missing = sorted(required - set(values)) if isinstance(values, dict) else "all"
            raise CifarJaxError(
                f"{where} is not an inference spec of cifar_jax (missing: {missing}). " + _SPEC_FIX
            )
        if values.get("version", SPEC_VERSION) > SPEC_VERSION:
            raise CifarJaxError(
                f"{where} has format version {values['version']}, newer than this cifar_jax "
                f"reads ({SPEC_VERSION}); update cifar_jax."
            )
        kept = {k: v for k, v in values.items() if k in fields}
        for key in ("class_names", "mean", "std", "image_shape"):
            if key in kept:
                kept[key] = tuple(kept[key])
        return cls(**kept)


def spec_path(workdir: str) -> str:
    return os.path.join(workdir, SPEC_FILE)


def write_spec(workdir: str, spec: InferenceSpec) -> str:
    """Writes ``<workdir>/inference.json`` atomically; returns its path."""
    from cifar_jax import workdir as workdir_lib

    path = spec_path(workdir)
    with workdir_lib.write_errors(SPEC_FILE, workdir):
        workdir_lib.write_json_atomic(path, spec.to_json())
    return path


def read_spec(workdir: str) -> InferenceSpec | None:
    """The spec a run saved, or None for a run made before runs saved one."""
    from cifar_jax import workdir as workdir_lib

    path = spec_path(workdir)
    if not os.path.exists(path):
        return None
    return InferenceSpec.from_json(workdir_lib.read_json_object(path, _SPEC_FIX), path)


def load_data(config: ml_collections.ConfigDict, spec: InferenceSpec | None) -> Any:
    """The data set of ``config`` (``data.load_dataset``), checked against the classes the
    run was trained on (``spec``) when there is one."""
    from cifar_jax import data

    dataset = data.load_dataset(config)
    if spec is not None and tuple(dataset.class_names) != spec.class_names:
        raise DataError(
            f"the data set read from {dataset.source} has the classes "
            f"{list(dataset.class_names)}, but the run was trained on {list(spec.class_names)} "
            f"({spec.dataset}, label_type={spec.label_type}, class_subset={spec.class_subset}). "
            "Pass --data_dir (or data_dir=) pointing at the run's data set."
        )
    return dataset


__all__ = [
    "IMAGE_SHAPE",
    "INPUT",
    "OUTPUT",
    "SPEC_FILE",
    "SPEC_VERSION",
    "InferenceSpec",
    "load_data",
    "read_spec",
    "spec_path",
    "write_spec",
]
