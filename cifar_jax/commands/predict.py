"""Classify image files with a trained run.

    python -m cifar_jax predict --workdir=runs/lenet cat.png dog.jpg ... [--top_k=5]
        [--json] [--checkpoint=latest|best|STEP] [--tta=none|flip|flip_translate|airbench]

Any format and size Pillow reads: each image is converted to RGB (alpha dropped) and
resized as a whole to 32x32 (bicubic, antialiased; the aspect ratio is not kept, crop
the object first for best results); a 32x32 RGB image is used pixel for pixel. The
images then go through exactly the evaluation path of ``cifar_jax.evaluation`` (same
normalization, same jitted and sharded step), so a test image saved as PNG gets the
probabilities ``evaluate`` computes for it. No data set is read: the class names and
normalization come from the run's ``inference.json`` (runs made before it existed read
their data set, ``--data_dir`` if it moved). ``run.predict`` of the Python API
(``cifar_jax.load_run``) is the same path.

Prints the ``top_k`` classes with their probabilities per image, or with ``--json`` one
JSON object: ``{"workdir", "checkpoint", "step", "tta", "predictions": [{"image",
"size", "top_k": [{"class", "index", "probability"}, ...]}, ...]}``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np

from cifar_jax import inference, runs, tta
from cifar_jax.errors import CifarJaxError, ConfigError

IMAGE_SIZE = inference.IMAGE_SHAPE[0]
load_image = inference.load_image  # the one reader, shared with the Python API


def predict_images(
    run: runs.LoadedRun, paths: Sequence[str], top_k: int = 5, mode: str = "none"
) -> dict[str, Any]:
    """Top-k classes of each image (see the module docstring for the structure)."""
    if not paths:
        raise CifarJaxError("no images given; pass one or more image paths after the flags.")
    if top_k < 1:
        raise ConfigError(f"--top_k={top_k} must be >= 1.")
    top_k = min(top_k, run.num_classes)
    loaded = [load_image(p) for p in paths]
    result = run.predict(np.stack([image for image, _ in loaded]), tta=mode)
    out = []
    for path, (_, size), p in zip(paths, loaded, result.probs, strict=True):
        order = np.argsort(-p, kind="stable")[:top_k]
        out.append(
            {
                "image": path,
                "size": list(size),
                "top_k": [
                    {"class": run.class_names[i], "index": int(i), "probability": float(p[i])}
                    for i in order
                ],
            }
        )
    return {
        "workdir": run.workdir,
        "checkpoint": run.checkpoint,
        "step": run.step,
        "tta": mode,
        "predictions": out,
    }


def format_text(result: dict[str, Any]) -> str:
    lines = []
    for p in result["predictions"]:
        width, height = p["size"]
        lines.append(f"{p['image']} ({width}x{height}):")
        name_width = max(len(t["class"]) for t in p["top_k"])
        for rank, t in enumerate(p["top_k"], 1):
            lines.append(
                f"  {rank}. {t['class'].ljust(name_width)}  {100 * t['probability']:6.2f}%"
            )
    return "\n".join(lines)


def run() -> None:
    """Command-line entry point (flags defined here, not at import)."""
    from absl import app, flags

    from cifar_jax.commands import cli

    workdir, checkpoint, data_dir = cli.define_run_flags("Checkpoint to use")
    top_k = flags.DEFINE_integer("top_k", 5, "Classes to show per image.")
    as_json = flags.DEFINE_bool("json", False, "Print one JSON object instead of text.")
    tta_mode = flags.DEFINE_enum("tta", "none", list(tta.TTA_MODES), "Test-time augmentation.")

    def main(argv: list[str]) -> None:
        with cli.user_errors():
            paths = argv[1:]
            if not paths:
                raise CifarJaxError(
                    "no images given: python -m cifar_jax predict --workdir=DIR image.png ..."
                )
            for path in paths:  # fail on a bad path before loading the run
                load_image(path)
            loaded = cli.load_workdir_run(workdir.value, checkpoint.value, data_dir.value)
            result = predict_images(loaded, paths, top_k.value, tta_mode.value)
            import jax

            if jax.process_index() == 0:
                print(json.dumps(result, indent=2) if as_json.value else format_text(result))

    app.run(main, flags_parser=cli.parse_flags)
