"""The check of an exported file: run it, and compare it with the package.

:func:`check_export` runs the file (:func:`run_exported`, the way its users run it) and
compares log-probabilities with the package's predictions (``run.predict``; the file's
output is probabilities, their logs are the logits up to a per-image constant), per image
relative to that image's range of log-probabilities, so a saturated softmax cannot hide a
logit error. It runs on real CIFAR images (:func:`check_images`): the first
:data:`CHECK_IMAGES` images of the run's test split when its data set can be read here
without downloading (the run's ``data_dir``, or load_run's ``data_dir``); otherwise the 30
real CIFAR-10 test images shipped in this package (:data:`SHIPPED_CHECK_IMAGES`: the first
3 of each class of the official ``test_batch.bin``, about 87 KB).
"""

from __future__ import annotations

import dataclasses
import os
from typing import TYPE_CHECKING, Any

import numpy as np

from cifar_jax.errors import CifarJaxError
from cifar_jax.inference.images import as_images
from cifar_jax.inference.spec import IMAGE_SHAPE, load_data

if TYPE_CHECKING:  # annotations only: loading a run imports this package, never the reverse
    from cifar_jax.runs import LoadedRun

# Largest difference of log-probabilities, relative to the image's range of log-probabilities
# (:func:`relative_log_prob_difference`), the export check accepts. float32 programs agree to
# ~3e-7 (XLA's and oneDNN's convolutions sum in different orders); a bfloat16
# (half_precision) run's files differ from the package by bf16 rounding (~2e-3 for its
# float32 ONNX file on the test runs; bf16 keeps 8 significant bits, ~4e-3 per rounding).
CHECK_TOLERANCE = {"float32": 1e-4, "bfloat16": 5e-2}
# The check runs the first this many images of the run's test split (fewer if it is smaller).
CHECK_IMAGES = 256
# Real CIFAR-10 test images for the check where the run's data set cannot be read: the first
# 3 images of each class of the official test_batch.bin, uint8 NHWC (``images``), with their
# ``labels``, their record numbers in that file (``indices``) and a ``source`` line.
SHIPPED_CHECK_IMAGES = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "cifar10_check_images.npz"
)  # in cifar_jax/, beside this package


def run_exported(path: str, fmt: str, images: np.ndarray) -> np.ndarray:
    """Probabilities of ``images`` from an exported file, run the way its users run it:
    ``jax.export.deserialize`` (on this machine's default device) or onnxruntime (CPU)."""
    if fmt == "stablehlo":
        import jax

        with open(path, "rb") as f:
            exported = jax.export.deserialize(bytearray(f.read()))
        return np.asarray(exported.call(images))
    try:
        import onnxruntime
    except ImportError as e:
        raise CifarJaxError(
            f"checking an ONNX export needs onnxruntime ({e}): pip install -e '.[export]', "
            "or pass --nocheck."
        ) from e
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    return np.asarray(session.run(None, {"images": images})[0])


class ExportCheckError(CifarJaxError):
    """An exported file that does not give the package's predictions, or no images to
    check one on."""


@dataclasses.dataclass(frozen=True)
class CheckImages:
    """The images :func:`check_export` runs, and what they are (for its message)."""

    images: np.ndarray  # uint8 (N, 32, 32, 3)
    description: str

    def __len__(self) -> int:
        return len(self.images)


@dataclasses.dataclass(frozen=True)
class CheckResult:
    """What :func:`check_export` compared, and how close the file came."""

    images: str  # which images (CheckImages.description)
    count: int
    max_relative_difference: float  # max over images of relative_log_prob_difference
    tolerance: float

    def __str__(self) -> str:
        return (
            f"on {self.count} images ({self.images}) the file's log-probabilities are "
            f"within {self.max_relative_difference:.1e} of the package's, relative to each "
            f"image's range of log-probabilities (allowed {self.tolerance:g})"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "images": self.images,
            "count": self.count,
            "compared": "log-probabilities against run.predict, relative to each image's "
            "range of log-probabilities",
            "max_relative_difference": self.max_relative_difference,
            "tolerance": self.tolerance,
        }


def log_probs(probs: Any) -> np.ndarray:
    """``log(probs)`` in float32, a probability below float32's smallest normal number
    (underflowed, or flushed to zero by one runtime and not by another) counted as it."""
    return np.log(np.maximum(np.asarray(probs, np.float32), np.finfo(np.float32).tiny))


def relative_log_prob_difference(got: Any, want: Any) -> np.ndarray:
    """Per image (row), the largest ``|log got - log want|`` over the classes, divided by
    the image's range of log-probabilities under ``want`` (``max |log want|``, the spread
    of its logits; at least 1): the measure of :func:`check_export`. Unlike ``|got -
    want|``, a saturated softmax (``p = 1.0`` beside ``1e-20``) does not hide a logit
    error from it. NaN where ``got`` is NaN."""
    lg, lw = log_probs(got), log_probs(want)
    scale = np.maximum(np.abs(lw).max(axis=-1), 1.0)
    return np.abs(lg - lw).max(axis=-1) / scale


def check_export(
    run: LoadedRun,
    path: str,
    fmt: str,
    images: CheckImages | np.ndarray,
    *,
    out: str | None = None,
) -> CheckResult:
    """Runs the exported file at ``path`` on ``images`` against :meth:`LoadedRun.predict`
    and compares their log-probabilities (:func:`relative_log_prob_difference`); an
    :class:`ExportCheckError` if the largest difference is over :data:`CHECK_TOLERANCE`
    (the run's compute dtype). ``out``: the file ``path`` is a temporary for (messages
    then say that ``out`` was not written)."""
    if not isinstance(images, CheckImages):
        array = as_images(images)
        images = CheckImages(array, f"{len(array)} given images")
    want = run.predict(images.images).probs
    got = run_exported(path, fmt, images.images)
    if out is None:
        what, outcome = f"the exported {fmt} file {path}", "the file is not to be trusted"
    else:
        there = "the file there is left as it was" if os.path.exists(out) else "nothing is there"
        what, outcome = f"the {fmt} export of {run.workdir}", f"{out} is not written ({there})"
    report = (
        "Please report this with the run's config (--nocheck writes the file unchecked, "
        "e.g. to inspect it)."
    )
    if got.shape != want.shape:
        raise ExportCheckError(
            f"{what} returns shape {got.shape} for {len(images)} images, not {want.shape}; "
            f"{outcome}. {report}"
        )
    per_image = relative_log_prob_difference(got, want)
    diff = float(np.max(per_image))
    # The package computes in the run's dtype: a bfloat16 run's ONNX file (float32)
    # differs from it by bf16 rounding too.
    tolerance = CHECK_TOLERANCE["bfloat16" if run.config.get("half_precision") else "float32"]
    if not diff <= tolerance:
        worst = int(np.argmax(np.where(np.isnan(per_image), np.inf, per_image)))
        raise ExportCheckError(
            f"{what} gives log-probabilities up to {diff:.2e} of an image's range of "
            f"log-probabilities away from the package's (allowed {tolerance:g}; worst: image "
            f"{worst} of {len(images)}, {images.description}); {outcome}. {report}"
        )
    return CheckResult(images.description, len(images), diff, tolerance)


def _first_sentence(error: BaseException, limit: int = 160) -> str:
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    text = text.split(". ")[0]
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _readable_test_split(run: LoadedRun) -> tuple[Any, str]:
    """``(the run's test split, "")`` if its data set can be read here without a download,
    else ``(None, why not)``."""
    config = run.config
    if config.get("data_source") == "synthetic":
        return None, "the run trained on synthetic images, not CIFAR"
    dataset = getattr(run, "_dataset", None)  # read at load for a run without inference.json
    if dataset is None:
        config = config.copy_and_resolve_references()
        if config.data_source in ("auto", "download"):
            config.data_source = "files"  # read what is there; the check never downloads
        try:
            dataset = load_data(config, run.spec)
        except CifarJaxError as e:
            return None, f"the run's test split cannot be read: {_first_sentence(e)}"
    if not len(dataset.test):
        return None, "the run's test split is empty"
    return dataset, ""


def shipped_check_images(why: str = "") -> CheckImages:
    """The real CIFAR-10 test images shipped in the package (:data:`SHIPPED_CHECK_IMAGES`),
    for a check where the run's test split cannot be read (``why``)."""
    problem = ""
    try:
        with np.load(SHIPPED_CHECK_IMAGES, allow_pickle=False) as f:
            images = np.asarray(f["images"])
        if images.dtype != np.uint8 or images.shape[1:] != IMAGE_SHAPE or not len(images):
            problem = f"it holds {images.dtype} images of shape {images.shape}"
    except (OSError, KeyError, ValueError) as e:
        problem = _first_sentence(e)
    if problem:
        raise ExportCheckError(
            f"cannot check the export: {why or 'no images were given'}, and the check images "
            f"shipped with cifar_jax ({SHIPPED_CHECK_IMAGES}) cannot be read ({problem}). "
            "Pass --data_dir=<the folder of the run's data set> so that the check runs on "
            "its test images, reinstall cifar_jax, or pass --nocheck."
        )
    note = f"; {why}" if why else ""
    return CheckImages(
        images,
        f"the {len(images)} real CIFAR-10 test images shipped with cifar_jax, the first 3 "
        f"of each class of test_batch.bin{note}",
    )


def check_images(run: LoadedRun, num: int = CHECK_IMAGES) -> CheckImages:
    """The real images :func:`check_export` runs: the first ``num`` images of the run's
    test split when its data set can be read here (from the run's ``data_dir``, or
    load_run's ``data_dir`` that replaces it; never downloaded), otherwise the CIFAR-10
    test images shipped in the package (:func:`shipped_check_images`; also for a run on
    synthetic data, whose images are not CIFAR)."""
    dataset, why = _readable_test_split(run)
    if dataset is None:
        return shipped_check_images(why)
    n = min(num, len(dataset.test))
    return CheckImages(
        np.asarray(dataset.test.images[:n]),
        f"the first {n} images of the run's test split, {dataset.source}",
    )


__all__ = [
    "CHECK_IMAGES",
    "CHECK_TOLERANCE",
    "SHIPPED_CHECK_IMAGES",
    "CheckImages",
    "CheckResult",
    "ExportCheckError",
    "check_export",
    "check_images",
    "log_probs",
    "relative_log_prob_difference",
    "run_exported",
    "shipped_check_images",
]
