"""The model as one file other programs run: StableHLO or ONNX.

:func:`probs_function` is the model as a plain function: uint8 RGB images ``(N, 32, 32,
3)`` in, softmax probabilities ``(N, C)`` out, normalization inside, the weights as
constants, traced with XLA's plain ops (:func:`cifar_jax.parallel.traced_portable`).
:func:`export` writes it as a ``jax.export`` serialization (``stablehlo``: loadable with
``jax.export.deserialize`` without this package, symbolic batch, CPU and CUDA) or as ONNX
(``onnx``: converted by jax2onnx, the ``[export]`` extra; dynamic batch axis), with a
``<file>.json`` beside it that says what goes in and what comes out.

:func:`export_checked` writes the file under a temporary name beside ``out``, runs it
(:func:`cifar_jax.inference.export_check.check_export`) and moves it to ``out`` only if it
gives the package's predictions (``run.predict``).

Every function here takes the loaded run (:class:`cifar_jax.runs.LoadedRun`) it exports;
none loads one.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging as std_logging
import os
import secrets
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from cifar_jax.errors import CifarJaxError, ConfigError
from cifar_jax.inference.export_check import CheckImages, CheckResult, check_export, check_images
from cifar_jax.inference.spec import IMAGE_SHAPE, INPUT, OUTPUT

if TYPE_CHECKING:  # annotations only: loading a run imports this package, never the reverse
    from cifar_jax.runs import LoadedRun

FORMATS = ("stablehlo", "onnx")
PLATFORMS = ("cpu", "cuda")  # what a stablehlo export runs on unless told otherwise
ONNX_OPSET = 23


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


__all__ = [
    "FORMATS",
    "ONNX_OPSET",
    "PLATFORMS",
    "check_format",
    "compute_dtype",
    "describe",
    "export",
    "export_checked",
    "export_onnx",
    "export_stablehlo",
    "host_variables",
    "probs_function",
]
