"""A trained model outside training: what it needs to classify an image, and the one
function every exported file holds.

A training run writes ``inference.json`` next to its checkpoints (:func:`write_spec`):
the class names, the data set, label type and class subset they come from, the
normalization mean/std, the input shape, the model id and the resolved config. With it a
workdir copied to another machine classifies images without its data set
(:func:`cifar_jax.runs.load_run` reads it).

:func:`probs_function` is the model as a plain function: uint8 RGB images ``(N, 32, 32,
3)`` in, softmax probabilities ``(N, C)`` out, normalization inside, the weights as
constants, traced with XLA's plain ops (:func:`cifar_jax.parallel.traced_portable`).
:func:`export` writes it as a ``jax.export`` serialization (``stablehlo``: loadable with
``jax.export.deserialize`` without this package, symbolic batch, CPU and CUDA) or as ONNX
(``onnx``: converted by jax2onnx, the ``[export]`` extra; dynamic batch axis), with a
``<file>.json`` beside it that says what goes in and what comes out.

:func:`export_checked` writes the file under a temporary name beside ``out``, runs it
(:func:`check_export`) and moves it to ``out`` only if it gives the package's predictions
(``run.predict``). The check compares log-probabilities (the file's output is
probabilities; their logs are the logits up to a per-image constant), per image relative to
that image's range of log-probabilities, so a saturated softmax cannot hide a logit error.
It runs on real CIFAR images (:func:`check_images`): the first :data:`CHECK_IMAGES` images
of the run's test split when its data set can be read here without downloading (the run's
``data_dir``, or load_run's ``data_dir``); otherwise the 30 real CIFAR-10 test images shipped
in this package (:data:`SHIPPED_CHECK_IMAGES`: the first 3 of each class of the official
``test_batch.bin``, about 87 KB).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import logging as std_logging
import os
import secrets
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from cifar_jax.errors import CifarJaxError, ConfigError

if TYPE_CHECKING:
    from cifar_jax.runs import LoadedRun

SPEC_FILE = "inference.json"
SPEC_VERSION = 1
IMAGE_SHAPE = (32, 32, 3)
INPUT = "uint8 RGB pixels 0-255, shape (N, 32, 32, 3) (NHWC)"
OUTPUT = "float32 softmax probabilities, shape (N, num_classes), in class_names order"
FORMATS = ("stablehlo", "onnx")
_SPEC_FIX = (
    "Restore it, or delete it and run python -m cifar_jax evaluate where the run's data set "
    "is, which writes it again."
)
PLATFORMS = ("cpu", "cuda")  # what a stablehlo export runs on unless told otherwise
ONNX_OPSET = 23
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
SHIPPED_CHECK_IMAGES = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                    "cifar10_check_images.npz")  # fmt: skip


# ------------------------------------------------------------------ the spec


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


# ------------------------------------------------------------------ images


def load_image(path: str) -> tuple[np.ndarray, tuple[int, int]]:
    """``(uint8 (32, 32, 3) RGB array, original (width, height))`` of an image file.

    Any format Pillow reads, converted to RGB (alpha dropped) and resized as a whole to
    32x32 (bicubic, antialiased; the aspect ratio is not kept); a 32x32 RGB image is used
    pixel for pixel.
    """
    from PIL import Image, UnidentifiedImageError

    if not os.path.isfile(path):
        raise CifarJaxError(f"image {path} does not exist; pass paths of image files.")
    try:
        with Image.open(path) as image:
            size = image.size
            image = image.convert("RGB")
            if image.size != IMAGE_SHAPE[:2]:
                image = image.resize(IMAGE_SHAPE[:2], Image.Resampling.BICUBIC)
            return np.asarray(image, np.uint8).copy(), size
    except (UnidentifiedImageError, OSError) as e:
        raise CifarJaxError(
            f"cannot read image {path}: {e}. Pass a PNG, JPEG or other image Pillow can read."
        ) from e


def _is_path(x: Any) -> bool:
    return isinstance(x, str | os.PathLike)


def as_images(images: Any) -> np.ndarray:
    """``images`` as the uint8 ``(N, 32, 32, 3)`` array the model takes: an array of that
    form (numpy or jax), or one image file path or a sequence of them (:func:`load_image`).
    Anything else is a CifarJaxError saying what was given and what to pass."""
    if _is_path(images):
        images = [images]
    if isinstance(images, list | tuple) and images and all(_is_path(p) for p in images):
        return np.stack([load_image(os.fspath(p))[0] for p in images])
    try:
        array = np.asarray(images)
    except Exception as e:  # noqa: BLE001 - whatever it is, it is not an image batch
        raise CifarJaxError(
            f"cannot read {type(images).__name__} as images ({e}); pass a uint8 array of "
            "shape (N, 32, 32, 3) or image file paths."
        ) from e
    if array.dtype != np.uint8:
        hint = (
            " Floats in [0, 1]: (x * 255).round().astype(np.uint8)."
            if np.issubdtype(array.dtype, np.floating)
            else ""
        )
        raise CifarJaxError(
            f"images have dtype {array.dtype}; the model takes uint8 RGB pixels 0-255 (it "
            f"normalizes them itself, as in training).{hint}"
        )
    if array.ndim == 3 and array.shape == IMAGE_SHAPE:
        raise CifarJaxError(
            f"images have shape {array.shape}: one image without the batch axis; pass "
            "images[None] (shape (1, 32, 32, 3))."
        )
    if array.ndim != 4 or array.shape[1:] != IMAGE_SHAPE:
        raise CifarJaxError(
            f"images have shape {array.shape}; the model takes (N, 32, 32, 3) RGB in NHWC "
            "order. Resize other sizes to 32x32 first (or pass the file paths: they are "
            "resized), and move a channels-first axis last (np.transpose(x, (0, 2, 3, 1)))."
        )
    if array.shape[0] == 0:
        raise CifarJaxError("no images given (an array of 0 images); pass at least one.")
    return array


# ------------------------------------------------------------------ predictions


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


# ------------------------------------------------------------------ the exported function


def host_variables(run: LoadedRun) -> dict[str, Any]:
    """The run's params and BatchNorm statistics as host numpy arrays."""
    import jax

    def host(x: Any) -> np.ndarray:
        return np.asarray(x.addressable_data(0) if hasattr(x, "addressable_data") else x)

    return jax.tree.map(host, run.variables)


def probs_function(run: LoadedRun, *, float32: bool = False) -> Callable[[Any], Any]:
    """``probs(uint8 images (N, 32, 32, 3)) -> (N, C)`` with the run's weights as constants
    and its normalization inside: the function every exported file holds, traced
    portably (:func:`cifar_jax.parallel.traced_portable`). ``float32``: compute in
    float32 even for a half_precision run (its params are float32 already)."""
    from cifar_jax import models, parallel, tta

    model = run.model
    if float32 and compute_dtype(run) != "float32":
        config = run.config.copy_and_resolve_references()
        config.half_precision = False
        model = models.build_model(config, run.num_classes)
    probs = tta.make_probs_fn(model, run.mean, run.std, "none")
    variables = host_variables(run)

    def infer(images: Any) -> Any:
        return probs(variables, images)

    return parallel.traced_portable(infer)


def compute_dtype(run: LoadedRun, fmt: str = "stablehlo") -> str:
    """The dtype an export of ``fmt`` computes in: the run's (bfloat16 with half_precision)
    for stablehlo, float32 for onnx (onnxruntime has no bfloat16 convolution on CPU)."""
    half = fmt == "stablehlo" and run.config.get("half_precision", False)
    return "bfloat16" if half else "float32"


def describe(run: LoadedRun, fmt: str, platforms: Sequence[str] | None = None) -> dict[str, Any]:
    """The facts written beside an exported file (``<file>.json``)."""
    out = {
        "format": fmt,
        "input": {"name": "images", "dtype": "uint8", "shape": ["batch", *IMAGE_SHAPE],
                  "meaning": INPUT},
        "output": {"name": "probabilities", "dtype": "float32",
                   "shape": ["batch", run.num_classes], "meaning": OUTPUT},
        "class_names": list(run.class_names),
        "normalization_inside": {"mean": list(run.spec.mean), "std": list(run.spec.std),
                                 "formula": "(x / 255 - mean) / std"},
        "compute_dtype": compute_dtype(run, fmt),
        "model": run.config.model,
        "dataset": run.spec.dataset,
        "label_type": run.spec.label_type,
        "class_subset": run.spec.class_subset,
        "workdir": run.workdir,
        "checkpoint": run.checkpoint,
        "step": run.step,
        "state_sha256": run.state_sha256(),
    }  # fmt: skip
    if platforms is not None:
        out["platforms"] = list(platforms)
    if fmt == "stablehlo":
        out["load"] = (
            "exp = jax.export.deserialize(bytearray(open(FILE, 'rb').read())); "
            "probs = exp.call(images)"
        )
    else:
        out["load"] = "onnxruntime.InferenceSession(FILE).run(None, {'images': images})[0]"
    return out


def _write_bytes(path: str, data: bytes) -> None:
    from cifar_jax import workdir as workdir_lib

    try:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        workdir_lib.write_bytes_atomic(path, data)
    except OSError as e:
        raise CifarJaxError(f"cannot write {path}: {e}. Pass an --out in a writable folder.") from e


def _symbolic_batch(name: str) -> Any:
    import jax
    import jax.numpy as jnp

    shape = jax.export.symbolic_shape(f"{name}, {', '.join(map(str, IMAGE_SHAPE))}")
    return jax.ShapeDtypeStruct(shape, jnp.uint8)


def export_stablehlo(run: LoadedRun, platforms: Sequence[str] = PLATFORMS) -> bytes:
    """The serialized ``jax.export`` of :func:`probs_function` for ``platforms``, with a
    symbolic batch dimension ``b``."""
    import jax

    from cifar_jax.kernels.lowering import PLATFORMS as KNOWN

    unknown = [p for p in platforms if p not in KNOWN]
    if not platforms or unknown:
        raise ConfigError(
            f"cannot export for platforms {list(platforms)}: choose from {', '.join(KNOWN)} "
            "(e.g. --platforms=cpu,cuda)."
        )
    exported = jax.export.export(jax.jit(probs_function(run)), platforms=tuple(platforms))(
        _symbolic_batch("b")
    )
    return bytes(exported.serialize())


@contextlib.contextmanager
def _quiet_converter():
    """jax2onnx prints debug lines and onnx_ir warns about untyped shape constants while
    converting; the user gets our one line instead."""
    loggers = [std_logging.getLogger(n) for n in ("onnx_ir", "onnx_ir.serde", "jax2onnx")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(std_logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def _import_onnx() -> tuple[Any, Any]:
    try:
        import jax2onnx
        import onnx
    except ImportError as e:
        raise CifarJaxError(
            f"ONNX export needs jax2onnx and onnx ({e}). Install the export extra: "
            "pip install -e '.[export]' (or pip install jax2onnx onnxruntime)."
        ) from e
    _check_converter_supports_jax(_version("jax2onnx"), _version("jax"))
    return jax2onnx, onnx


def _version(dist: str) -> str:
    import importlib.metadata

    return importlib.metadata.version(dist)


def _check_converter_supports_jax(converter: str, jax_version: str) -> None:
    """jax2onnx 0.13 (the [export] pin) builds ``jax.core.Var`` with the signature jax 0.11
    dropped, and fails deep in its tracer there (checked 2026-12-07 under Python 3.12 with
    jax 0.11.2); later jax2onnx releases pin an orbax-checkpoint older than the package's.
    Say so before converting instead of a TypeError from inside the converter."""
    if converter.startswith("0.13.") and tuple(map(int, jax_version.split(".")[:2])) >= (0, 11):
        raise CifarJaxError(
            f"ONNX export with jax2onnx {converter} (the [export] extra's) does not work on "
            f"jax {jax_version}: it needs jax 0.10 (Python 3.11, where pip install -e "
            "'.[export]' picks jax 0.10.2). Export StableHLO instead (--format=stablehlo), "
            "or export from a Python 3.11 environment."
        )


def export_onnx(run: LoadedRun, opset: int = ONNX_OPSET) -> bytes:
    """:func:`probs_function` as an ONNX model (jax2onnx), input ``images`` with a dynamic
    batch axis ``batch``, output ``probabilities``; the facts of :func:`describe` in its
    metadata (``metadata_props``, JSON values). Always float32 compute (a half_precision
    run's file too: onnxruntime's CPU provider has no bfloat16 convolution).

    The first conversion in a process also imports every jax2onnx plugin (~20 s on 2
    busy cores: its equinox examples compile at import); later ones take seconds."""
    jax2onnx, onnx = _import_onnx()
    with _quiet_converter():
        model = jax2onnx.to_onnx(
            probs_function(run, float32=True),
            inputs=[_symbolic_batch("batch")],
            model_name=f"cifar_jax_{run.config.model}",
            opset=opset,
            input_names=["images"],
            output_names=["probabilities"],
        )
    for key, value in describe(run, "onnx").items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, json.dumps(value)
    model.doc_string = f"cifar_jax {run.config.model}: {INPUT} -> {OUTPUT}"
    onnx.checker.check_model(model)
    return model.SerializeToString()


def check_format(fmt: str) -> str:
    if fmt not in FORMATS:
        raise ConfigError(f"--format={fmt!r} is not known; use one of {', '.join(FORMATS)}.")
    return fmt


def _exported(
    run: LoadedRun, fmt: str, out: str, platforms: Sequence[str]
) -> tuple[str, bytes, dict[str, Any]]:
    """``(absolute out, the file's bytes, its facts)`` of an export request, checked."""
    check_format(fmt)
    if not out:
        raise ConfigError("no --out given; pass the file to write, e.g. --out=model.onnx.")
    out = os.path.abspath(os.path.expanduser(out))
    if os.path.isdir(out):
        raise ConfigError(f"--out={out} is a folder; pass a file name in it.")
    data = export_stablehlo(run, platforms) if fmt == "stablehlo" else export_onnx(run)
    return out, data, describe(run, fmt, platforms if fmt == "stablehlo" else None)


def _json_bytes(facts: dict[str, Any]) -> bytes:
    return (json.dumps(facts, indent=2) + "\n").encode()


def export(
    run: LoadedRun, fmt: str, out: str, platforms: Sequence[str] = PLATFORMS
) -> tuple[str, str]:
    """Writes the run's inference function to ``out`` in ``fmt`` (``stablehlo`` or
    ``onnx``) and its facts to ``<out>.json`` (``"check": null``), each atomically, without
    checking the file (:func:`export_checked` does); returns both paths."""
    out, data, facts = _exported(run, fmt, out, platforms)
    _write_bytes(out, data)
    _write_bytes(out + ".json", _json_bytes({**facts, "check": None}))
    return out, out + ".json"


def export_checked(
    run: LoadedRun,
    fmt: str,
    out: str,
    images: CheckImages | None = None,
    platforms: Sequence[str] = PLATFORMS,
) -> tuple[str, str, CheckResult]:
    """:func:`export`, checked before anything reaches ``out``: the file and its facts are
    written under temporary names in ``out``'s folder, the file is run on ``images``
    (default :func:`check_images`) by :func:`check_export`, and only if it passes are both
    moved to ``out`` and ``<out>.json`` (whose ``"check"`` then records the check). A
    failed check (:class:`ExportCheckError`) removes the temporary files and leaves ``out``
    and ``<out>.json`` as they were (absent, or a previous export). Returns both paths and
    the check's result."""
    out, data, facts = _exported(run, fmt, out, platforms)
    images = check_images(run) if images is None else images
    folder, name = os.path.split(out)
    temporary: list[str] = []
    try:
        try:
            os.makedirs(folder, exist_ok=True)
            # A new name ("x": never an existing file), made with the user's umask.
            path = os.path.join(folder, f".{name}.{os.getpid()}.{secrets.token_hex(4)}.unchecked")
            with open(path, "xb") as f:
                temporary.append(path)
                f.write(data)
        except OSError as e:
            raise CifarJaxError(
                f"cannot write {out}: {e}. Pass an --out in a writable folder."
            ) from e
        result = check_export(run, path, fmt, images, out=out)
        temporary.append(path + ".json")
        _write_bytes(path + ".json", _json_bytes({**facts, "check": result.to_json()}))
        try:
            os.replace(path, out)
            os.replace(path + ".json", out + ".json")
        except OSError as e:
            raise CifarJaxError(
                f"cannot write {out}: {e}. Pass an --out in a writable folder."
            ) from e
    finally:
        for leftover in temporary:  # gone after a successful move
            with contextlib.suppress(OSError):
                os.remove(leftover)
    return out, out + ".json", result


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


# ------------------------------------------------------------------ the export check


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
    from cifar_jax import runs

    config = run.config
    if config.get("data_source") == "synthetic":
        return None, "the run trained on synthetic images, not CIFAR"
    dataset = getattr(run, "_dataset", None)  # read at load for a run without inference.json
    if dataset is None:
        config = config.copy_and_resolve_references()
        if config.data_source in ("auto", "download"):
            config.data_source = "files"  # read what is there; the check never downloads
        try:
            dataset = runs.load_data(config, run.spec)
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
    "FORMATS",
    "IMAGE_SHAPE",
    "PLATFORMS",
    "SHIPPED_CHECK_IMAGES",
    "SPEC_FILE",
    "CheckImages",
    "CheckResult",
    "ExportCheckError",
    "InferenceSpec",
    "Predictions",
    "as_images",
    "check_export",
    "check_format",
    "check_images",
    "describe",
    "export",
    "export_checked",
    "export_onnx",
    "export_stablehlo",
    "host_variables",
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
