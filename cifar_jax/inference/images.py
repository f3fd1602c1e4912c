"""The images a run is asked to classify: image files read and resized to 32x32
(:func:`load_image`), and anything given to ``run.predict`` checked to be the uint8
``(N, 32, 32, 3)`` batch the model takes (:func:`as_images`), with a message that says
what to pass otherwise.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from cifar_jax.errors import CifarJaxError
from cifar_jax.inference.spec import IMAGE_SHAPE


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


__all__ = ["as_images", "load_image"]
