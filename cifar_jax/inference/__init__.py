"""A trained model outside training: what it needs to classify an image, and the one
function every exported file holds. One module per concern:

* :mod:`~cifar_jax.inference.spec`: the inference spec, ``inference.json``, that a training
  run writes next to its checkpoints (class names, normalization, model, config), so a
  copied workdir classifies images without its data set; reading it and checking a data
  set read later against it.
* :mod:`~cifar_jax.inference.images`: the images given to ``run.predict`` (files read and
  resized, arrays checked).
* :mod:`~cifar_jax.inference.predictions`: :class:`Predictions`, what ``run.predict``
  returns.
* :mod:`~cifar_jax.inference.exporting`: the model as one plain function
  (:func:`probs_function`) written as a StableHLO or ONNX file (:func:`export`,
  :func:`export_checked`).
* :mod:`~cifar_jax.inference.export_check`: running an exported file on real CIFAR images
  against the package's predictions (:func:`check_export`, :func:`check_images`).

Loading a run (:mod:`cifar_jax.runs`) uses this package; nothing here imports
:mod:`cifar_jax.runs`: the functions that need a loaded run take it as an argument.
The names below are re-exported, so ``from cifar_jax import inference;
inference.export(...)`` reads as before the split.
"""

from cifar_jax.inference.export_check import (
    CHECK_IMAGES,
    CHECK_TOLERANCE,
    SHIPPED_CHECK_IMAGES,
    CheckImages,
    CheckResult,
    ExportCheckError,
    check_export,
    check_images,
    log_probs,
    relative_log_prob_difference,
    run_exported,
    shipped_check_images,
)
from cifar_jax.inference.exporting import (
    FORMATS,
    ONNX_OPSET,
    PLATFORMS,
    check_format,
    compute_dtype,
    describe,
    export,
    export_checked,
    export_onnx,
    export_stablehlo,
    host_variables,
    probs_function,
)
from cifar_jax.inference.images import as_images, load_image
from cifar_jax.inference.predictions import Predictions
from cifar_jax.inference.spec import (
    IMAGE_SHAPE,
    INPUT,
    OUTPUT,
    SPEC_FILE,
    SPEC_VERSION,
    InferenceSpec,
    load_data,
    read_spec,
    spec_path,
    write_spec,
)

__all__ = [
    "CHECK_IMAGES",
    "CHECK_TOLERANCE",
    "FORMATS",
    "IMAGE_SHAPE",
    "INPUT",
    "ONNX_OPSET",
    "OUTPUT",
    "PLATFORMS",
    "SHIPPED_CHECK_IMAGES",
    "SPEC_FILE",
    "SPEC_VERSION",
    "CheckImages",
    "CheckResult",
    "ExportCheckError",
    "InferenceSpec",
    "Predictions",
    "as_images",
    "check_export",
    "check_format",
    "check_images",
    "compute_dtype",
    "describe",
    "export",
    "export_checked",
    "export_onnx",
    "export_stablehlo",
    "host_variables",
    "load_data",
    "load_image",
    "log_probs",
    "probs_function",
    "read_spec",
    "relative_log_prob_difference",
    "run_exported",
    "shipped_check_images",
    "spec_path",
    "write_spec",
]
