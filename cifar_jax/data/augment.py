"""Training augmentations: numpy on uint8 batches in the input pipeline, plus mixup and
cutmix in jax inside the jitted train step.

Every image op here works on a whole batch (N, H, W, C) of uint8 images with per-image
parameters, so a batch costs a handful of vectorised numpy calls rather than a Python
loop over images. The semantics are torchvision's for tensors (``torchvision.transforms``
v1 on a uint8 tensor): the same parameter ranges, nearest-neighbour geometry with the
same pixel-centre convention, the same float32 blending with truncation to uint8. The
PIL path of torchvision rounds some blends differently (by at most one intensity level).

Randomness: :func:`sample_params` draws every random number of a batch from one numpy
Generator, always in the same order and always the same count (whatever is enabled), and
only as uniform floats (``Generator.integers`` consumes a variable amount of the stream).
So enabling one augmentation never changes the randomness of another, and the draws for
a global batch do not depend on how many processes split it (each keeps its rows).

Horizontal flip, ``flip_mode``: "random" flips each image of each batch with
probability 1/2 (its draw ``u["flip"]``); "alternating" is airbench's scheme: each image
has a fixed random base flip for the whole run (:func:`base_flips`, a function of the
seed and the image's index in the split only) and epoch ``e`` flips it iff ``base XOR (e
odd)`` (:func:`alternating_flips`), so every image is seen mirrored in exactly one of
any two consecutive epochs. The pipeline passes that mask as ``u["flip_mask"]``; the
``u["flip"]`` draw is still made (and ignored), so the draw order never changes.

Order of application, fixed: random crop, horizontal flip, AutoAugment, colour jitter,
rotation, random erasing, cutout. Erasing and cutout fill with ``fill`` (the
normalization mean as uint8), i.e. with 0 after normalization, which is what
torchvision's ``RandomErasing(value=0)`` after ``Normalize`` and the reference cutout
(applied to the normalized tensor) give.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

AUTOAUGMENT_POLICIES = ("none", "cifar10")
FLIP_MODES = ("random", "alternating")
CROP_PADDING_MODES = ("constant", "reflect")
# Third entropy word of the base-flip generator: keeps its stream apart from the epoch
# permutations' default_rng([seed, epoch]) (which pad to [seed, epoch, 0, ...]).
_BASE_FLIP_STREAM = 0x666C6970  # "flip"
# Tries at finding an erasing rectangle that fits, as torchvision.
_ERASING_TRIES = 10


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    """The random augmentation of the training pipeline (see :mod:`cifar_jax.data.augment`
    for each op's semantics and the fixed order they run in)."""

    crop_padding: int = 0
    crop_padding_mode: str = "constant"
    flip: bool = False
    # How ``flip`` chooses the images it mirrors: "random" (each image of each batch with
    # probability 1/2) or "alternating" (airbench: a fixed random half in even epochs,
    # the other half in odd epochs; see augment.base_flips / alternating_flips).
    flip_mode: str = "random"
    # AutoAugment policy: "none" or "cifar10" (torchvision's AutoAugmentPolicy.CIFAR10).
    autoaugment: str = "none"
    # ColorJitter strengths (0 = that op off).
    brightness: float = 0.0
    contrast: float = 0.0
    saturation: float = 0.0
    # ColorJitter hue: hue_factor uniform in [-hue, hue] (0 = off).
    hue: float = 0.0
    # RandomRotation: angle uniform in [-rotation, rotation] degrees (0 = off).
    rotation: float = 0.0
    # RandomErasing: probability (0 = off), area fraction range, aspect ratio range.
    erasing_prob: float = 0.0
    erasing_scale: tuple[float, float] = (0.02, 0.33)
    erasing_ratio: tuple[float, float] = (0.3, 3.3)
    # Cutout square side in pixels (0 = off).
    cutout_size: int = 0
    # uint8 RGB value erasing and cutout fill with: the normalization mean, i.e. 0 once
    # normalized (torchvision's RandomErasing(value=0) after Normalize).
    fill: tuple[int, int, int] = (0, 0, 0)

    @classmethod
    def from_config(cls, config, mean=None) -> AugmentConfig:
        """The config's augmentation; ``mean`` (in [0, 1] units, the one
        :func:`cifar_jax.data.pipeline.normalization_stats` gives) sets the erasing /
        cutout fill. The config's values are checked by
        :func:`cifar_jax.validation.validate_config`, not here."""
        fill = (0, 0, 0)
        if mean is not None:
            fill = tuple(int(v) for v in np.clip(np.round(np.asarray(mean) * 255.0), 0, 255))
        return cls(
            crop_padding=int(config.random_crop_padding),
            crop_padding_mode=config.crop_padding_mode,
            flip=bool(config.random_flip),
            flip_mode=config.get("flip_mode", "random"),
            autoaugment=config.autoaugment,
            brightness=float(config.color_jitter_brightness),
            contrast=float(config.color_jitter_contrast),
            saturation=float(config.color_jitter_saturation),
            hue=float(config.color_jitter_hue),
            rotation=float(config.random_rotation),
            erasing_prob=float(config.random_erasing_prob),
            erasing_scale=tuple(float(v) for v in config.random_erasing_scale),
            erasing_ratio=tuple(float(v) for v in config.random_erasing_ratio),
            cutout_size=int(config.cutout_size),
            fill=fill,
        )


# ------------------------------------------------------------------------ geometry


def random_crop(
    images: np.ndarray, offsets: np.ndarray, padding: int, mode: str = "constant"
) -> np.ndarray:
    """Crops each image of ``images`` (N,H,W,C) at ``offsets`` (N,2) after padding.

    ``offsets`` are in [0, 2 * padding]; offset ``padding`` is the unshifted image.
    """
    n, h, w, _ = images.shape
    pad_mode = "constant" if mode == "constant" else "reflect"
    padded = np.pad(images, ((0, 0), (padding, padding), (padding, padding), (0, 0)), pad_mode)
    hp, wp = padded.shape[1:3]
    rows = offsets[:, 0, None] + np.arange(h)  # (N, H)
    cols = offsets[:, 1, None] + np.arange(w)  # (N, W)
    flat = (np.arange(n)[:, None, None] * hp + rows[:, :, None]) * wp + cols[:, None, :]
    return take_pixels(padded, flat)


def take_pixels(images: np.ndarray, flat: np.ndarray, fill=None) -> np.ndarray:
    """``images`` (N,H,W,C) read at flat pixel indices ``flat`` (any shape): the result
    has shape ``flat.shape + (C,)``. Index ``N*H*W`` reads ``fill`` (if given).

    Each pixel's channels are gathered as one opaque item, which is faster than indexing
    with (image, row, col) arrays, whose inner loops run over 3 channels. Crop and
    rotation use it: cnn_bn_dropout's pipeline (``python -m cifar_jax bench``, pipeline
    column, b512) went from 37k to 49-53k img/s.
    """
    c = images.shape[-1]
    pixels = images.reshape(-1, c)
    if fill is not None:
        pixels = np.concatenate([pixels, np.empty((1, c), images.dtype)])
        pixels[-1] = fill
    pixel_type = np.dtype((np.void, c * images.dtype.itemsize))
    index_type = np.int32 if len(pixels) < 2**31 else np.int64
    taken = np.ascontiguousarray(pixels).view(pixel_type)[:, 0].take(flat.astype(index_type))
    return taken.view(images.dtype).reshape(*flat.shape, c)


def random_flip(images: np.ndarray, flip: np.ndarray) -> np.ndarray:
    """Mirrors left-right the images whose ``flip`` entry is True.

    Copies and mirrors only the flipped ones: 4x faster than ``np.where`` over a
    reversed view (1.15 -> 0.28 ms per 128 CIFAR images), which was the whole cost of
    LeNet's input pipeline."""
    out = images.copy()
    out[flip] = images[flip][:, :, ::-1, :]
    return out


@functools.lru_cache(maxsize=8)
def base_flips(seed: int, num_examples: int) -> np.ndarray:
    """The alternating flip's per-image base flip (epoch 0), read-only (N,) bool.

    Each image of the training split is flipped with probability 1/2, a pure function of
    ``(seed, example index)`` (one draw per example of a generator seeded by ``seed``),
    so any step, any resume and any number of processes agree. Cached: one draw per run.
    """
    rng = np.random.default_rng([seed, 0, _BASE_FLIP_STREAM])
    flips = rng.random(num_examples) < 0.5
    flips.setflags(write=False)
    return flips


def alternating_flips(base: np.ndarray, epoch: int) -> np.ndarray:
    """Which images epoch ``epoch`` flips: ``base`` on even epochs, its complement on odd."""
    return np.logical_xor(base, bool(int(epoch) % 2))


def inverse_affine_matrices(
    center: tuple[float, float],
    angle: np.ndarray,
    translate: tuple[np.ndarray, np.ndarray],
    shear: tuple[np.ndarray, np.ndarray],
) -> np.ndarray:
    """torchvision's ``_get_inverse_affine_matrix`` (scale 1) for N parameter sets.

    Angles and shears in degrees; returns (N, 2, 3) maps from output to input pixel
    coordinates measured from the image centre.
    """
    rot = np.radians(angle)
    sx, sy = np.radians(shear[0]), np.radians(shear[1])
    cx, cy = center
    tx, ty = translate
    a = np.cos(rot - sy) / np.cos(sy)
    b = -np.cos(rot - sy) * np.tan(sx) / np.cos(sy) - np.sin(rot)
    c = np.sin(rot - sy) / np.cos(sy)
    d = -np.sin(rot - sy) * np.tan(sx) / np.cos(sy) + np.cos(rot)
    m = np.zeros((len(rot), 2, 3))
    m[:, 0, 0], m[:, 0, 1], m[:, 1, 0], m[:, 1, 1] = d, -b, -c, a
    m[:, 0, 2] = d * (-cx - tx) + (-b) * (-cy - ty) + cx
    m[:, 1, 2] = (-c) * (-cx - tx) + a * (-cy - ty) + cy
    return m


def affine_nearest(images: np.ndarray, matrices: np.ndarray, fill=0) -> np.ndarray:
    """Warps each image by its inverse map (N, 2, 3), nearest neighbour, ``fill`` outside.

    Pixel (i, j) samples the input at ``matrix @ (j - W/2 + 0.5, i - H/2 + 0.5, 1)``
    (centre-relative), rounded half-to-even. The arithmetic is torchvision's, in float32
    (affine grid normalized by W/2, H/2, then ``grid_sample(mode="nearest",
    align_corners=False)``'s un-normalization), so pixels on rounding ties land where
    torchvision puts them.
    """
    n, h, w, _ = images.shape
    if n == 0:
        return images
    f32 = np.float32
    xs = (np.arange(w) - w * 0.5 + 0.5).astype(f32)[None, None, :]
    ys = (np.arange(h) - h * 0.5 + 0.5).astype(f32)[:, None][None]
    theta = matrices.astype(f32).transpose(0, 2, 1) / np.array([0.5 * w, 0.5 * h], f32)
    r = theta[:, :, :, None, None]  # (N, 3, 2, 1, 1)
    grid_x = xs * r[:, 0, 0] + ys * r[:, 1, 0] + r[:, 2, 0]
    grid_y = xs * r[:, 0, 1] + ys * r[:, 1, 1] + r[:, 2, 1]
    col = np.rint(((grid_x + f32(1)) * f32(w) - f32(1)) / f32(2)).astype(np.int32)
    row = np.rint(((grid_y + f32(1)) * f32(h) - f32(1)) / f32(2)).astype(np.int32)
    inside = (col >= 0) & (col < w) & (row >= 0) & (row < h)
    # One flat gather of whole pixels; pixels outside read the fill (take_pixels).
    flat = (np.arange(n)[:, None, None] * h + row) * w + col
    return take_pixels(images, np.where(inside, flat, n * h * w), fill)


def rotate(images: np.ndarray, degrees: np.ndarray, fill=0) -> np.ndarray:
    """Rotates image k by ``degrees[k]`` counter-clockwise about its centre (torchvision
    ``F.rotate``: nearest, no expansion, ``fill`` outside)."""
    zeros = np.zeros(len(images))
    matrices = inverse_affine_matrices(
        (0.0, 0.0), -np.asarray(degrees, np.float64), (zeros, zeros), (zeros, zeros)
    )
    return affine_nearest(images, matrices, fill)


def _shear(images: np.ndarray, magnitude: np.ndarray, axis: int) -> np.ndarray:
    """AutoAugment's ShearX/ShearY: shear factor ``magnitude`` about the top-left corner."""
    n, h, w, _ = images.shape
    zeros = np.zeros(n)
    angle = np.degrees(np.arctan(magnitude))
    shear = (angle, zeros) if axis == 0 else (zeros, angle)
    matrices = inverse_affine_matrices((-w * 0.5, -h * 0.5), zeros, (zeros, zeros), shear)
    return affine_nearest(images, matrices)


def _translate(images: np.ndarray, pixels: np.ndarray, axis: int) -> np.ndarray:
    """AutoAugment's TranslateX/TranslateY by ``int(pixels)`` (truncated toward zero)."""
    zeros = np.zeros(len(images))
    shift = np.trunc(pixels)
    translate = (shift, zeros) if axis == 0 else (zeros, shift)
    matrices = inverse_affine_matrices((0.0, 0.0), zeros, translate, (zeros, zeros))
    return affine_nearest(images, matrices)


# ---------------------------------------------------------------------------- colour
# torchvision blends in float32 and truncates to uint8; python-float factors are rounded
# to float32 first, as torch does when it multiplies a tensor by a Python scalar.


def _per_image(x) -> np.ndarray:
    return np.asarray(x, np.float64).reshape(-1, 1, 1, 1)


def _blend(img: np.ndarray, other, ratio) -> np.ndarray:
    ratio = _per_image(ratio)
    a, b = ratio.astype(np.float32), (1.0 - ratio).astype(np.float32)
    mixed = a * img.astype(np.float32) + b * np.asarray(other, np.float32)
    return np.clip(mixed, 0, 255).astype(np.uint8)


def grayscale(images: np.ndarray) -> np.ndarray:
    """(N,H,W,1) uint8 luma ``0.2989 R + 0.587 G + 0.114 B`` truncated, as torchvision."""
    x = images.astype(np.float32)
    gray = (
        np.float32(0.2989) * x[..., 0]
        + np.float32(0.587) * x[..., 1]
        + np.float32(0.114) * x[..., 2]
    )
    return gray.astype(np.uint8)[..., None]


def adjust_brightness(images: np.ndarray, factor) -> np.ndarray:
    return _blend(images, 0.0, factor)


def adjust_saturation(images: np.ndarray, factor) -> np.ndarray:
    return _blend(images, grayscale(images), factor)


def adjust_contrast(images: np.ndarray, factor) -> np.ndarray:
    mean = grayscale(images).astype(np.float32).mean(axis=(1, 2, 3), keepdims=True)
    return _blend(images, mean, factor)


def _rgb_to_hsv(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """torchvision's ``_rgb2hsv`` on float32 (..., 3) RGB in [0, 1]: hue in [0, 1)."""
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    maxc, minc = x.max(axis=-1), x.min(axis=-1)
    eqc = maxc == minc  # gray: hue and saturation 0 (no division by zero)
    cr = maxc - minc
    ones = np.ones_like(maxc)
    s = cr / np.where(eqc, ones, maxc)
    cr_divisor = np.where(eqc, ones, cr)
    rc, gc, bc = ((maxc - c) / cr_divisor for c in (r, g, b))
    hr = (maxc == r) * (bc - gc)
    hg = ((maxc == g) & (maxc != r)) * (2.0 + rc - bc)
    hb = ((maxc != g) & (maxc != r)) * (4.0 + gc - rc)
    h = np.fmod((hr + hg + hb) / 6.0 + 1.0, 1.0)
    return h, s, maxc


def _hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    """torchvision's ``_hsv2rgb``, float32: (...) planes to (..., 3) RGB."""
    i = np.floor(h * 6.0)
    f = (h * 6.0) - i
    i = i.astype(np.int32) % 6
    p = np.clip(v * (1.0 - s), 0.0, 1.0)
    q = np.clip(v * (1.0 - s * f), 0.0, 1.0)
    t = np.clip(v * (1.0 - s * (1.0 - f)), 0.0, 1.0)
    sector = [i == k for k in range(6)]
    channels = ((v, q, p, p, t, v), (t, v, v, q, p, p), (p, p, t, v, v, q))
    return np.stack([np.select(sector, c) for c in channels], axis=-1)


def adjust_hue(images: np.ndarray, factor) -> np.ndarray:
    """torchvision ``F.adjust_hue`` on uint8 tensors: to float32 ``x / 255``, RGB to HSV,
    hue ``(h + factor) mod 1``, back to RGB, then ``x * 255.999`` truncated to uint8
    (torchvision's ``convert_image_dtype``). ``factor`` in [-0.5, 0.5] per image."""
    factor = _per_image(factor).astype(np.float32)[..., 0]  # (N, 1, 1)
    h, s, v = _rgb_to_hsv(images.astype(np.float32) / np.float32(255.0))
    rgb = _hsv_to_rgb(np.mod(h + factor, np.float32(1.0)), s, v)
    return (rgb * np.float32(255.999)).astype(np.uint8)


def adjust_sharpness(images: np.ndarray, factor) -> np.ndarray:
    """Blend with the 3x3 ``[[1,1,1],[1,5,1],[1,1,1]] / 13`` blur (border pixels kept)."""
    x = images.astype(np.float32)
    kernel = np.ones((3, 3), np.float32)
    kernel[1, 1] = 5.0
    kernel /= kernel.sum()
    h, w = images.shape[1:3]
    blurred = np.zeros_like(x[:, 1:-1, 1:-1])
    for di in range(3):
        for dj in range(3):
            blurred += kernel[di, dj] * x[:, di : di + h - 2, dj : dj + w - 2]
    degenerate = images.copy()
    degenerate[:, 1:-1, 1:-1] = np.round(blurred).astype(np.uint8)
    return _blend(images, degenerate, factor)


def posterize(images: np.ndarray, bits) -> np.ndarray:
    """Keeps the top ``bits`` bits of every channel value."""
    bits = np.asarray(bits, np.int64).reshape(-1, 1, 1, 1)
    mask = (256 - (1 << (8 - bits))).astype(np.uint8)
    return images & mask


def solarize(images: np.ndarray, threshold) -> np.ndarray:
    """Inverts the values at or above ``threshold``."""
    return np.where(images >= _per_image(threshold), 255 - images, images).astype(np.uint8)


def invert(images: np.ndarray) -> np.ndarray:
    return (255 - images).astype(np.uint8)


def autocontrast(images: np.ndarray) -> np.ndarray:
    """Stretches each channel of each image to the full [0, 255] range."""
    lo = images.min(axis=(1, 2), keepdims=True).astype(np.float32)
    hi = images.max(axis=(1, 2), keepdims=True).astype(np.float32)
    flat = hi == lo
    # 255 * (1 / range): torch's rounding of ``255 / range`` in float32.
    recip = np.float32(1.0) / np.where(flat, np.float32(1.0), hi - lo)
    scale = np.where(flat, np.float32(1.0), np.float32(255.0) * recip)
    lo = np.where(flat, np.float32(0.0), lo)
    return np.clip((images.astype(np.float32) - lo) * scale, 0, 255).astype(np.uint8)


def equalize(images: np.ndarray) -> np.ndarray:
    """Histogram equalization of each channel of each image (torchvision / PIL rule)."""
    n, h, w, c = images.shape
    if n == 0:
        return images
    planes = images.transpose(0, 3, 1, 2).reshape(n * c, h * w).astype(np.int64)
    offsets = np.arange(n * c)[:, None] * 256
    hist = np.bincount((planes + offsets).ravel(), minlength=n * c * 256).reshape(n * c, 256)
    # Pixels outside the last non-empty bin, in steps of 255.
    last = hist[np.arange(n * c), planes.max(axis=1)]
    step = (h * w - last) // 255
    safe = np.maximum(step, 1)[:, None]
    lut = (np.cumsum(hist, axis=1) + (step // 2)[:, None]) // safe
    lut = np.clip(np.concatenate([np.zeros((n * c, 1), np.int64), lut[:, :-1]], axis=1), 0, 255)
    out = np.take_along_axis(lut, planes, axis=1)
    out = np.where(step[:, None] == 0, planes, out).astype(np.uint8)
    return out.reshape(n, c, h, w).transpose(0, 2, 3, 1)


# ---------------------------------------------------------------------- AutoAugment
# torchvision's AutoAugmentPolicy.CIFAR10: 25 sub-policies of two (op, probability,
# magnitude bin) each; one sub-policy is drawn per image, each op applies with its
# probability, signed magnitudes are negated with probability 1/2.
CIFAR10_POLICY: tuple[tuple[tuple[str, float, int | None], ...], ...] = (
    (("Invert", 0.1, None), ("Contrast", 0.2, 6)),
    (("Rotate", 0.7, 2), ("TranslateX", 0.3, 9)),
    (("Sharpness", 0.8, 1), ("Sharpness", 0.9, 3)),
    (("ShearY", 0.5, 8), ("TranslateY", 0.7, 9)),
    (("AutoContrast", 0.5, None), ("Equalize", 0.9, None)),
    (("ShearY", 0.2, 7), ("Posterize", 0.3, 7)),
    (("Color", 0.4, 3), ("Brightness", 0.6, 7)),
    (("Sharpness", 0.3, 9), ("Brightness", 0.7, 9)),
    (("Equalize", 0.6, None), ("Equalize", 0.5, None)),
    (("Contrast", 0.6, 7), ("Sharpness", 0.6, 5)),
    (("Color", 0.7, 7), ("TranslateX", 0.5, 8)),
    (("Equalize", 0.3, None), ("AutoContrast", 0.4, None)),
    (("TranslateY", 0.4, 3), ("Sharpness", 0.2, 6)),
    (("Brightness", 0.9, 6), ("Color", 0.2, 8)),
    (("Solarize", 0.5, 2), ("Invert", 0.0, None)),
    (("Equalize", 0.2, None), ("AutoContrast", 0.6, None)),
    (("Equalize", 0.2, None), ("Equalize", 0.6, None)),
    (("Color", 0.9, 9), ("Equalize", 0.6, None)),
    (("AutoContrast", 0.8, None), ("Solarize", 0.2, 8)),
    (("Brightness", 0.1, 3), ("Color", 0.7, 0)),
    (("Solarize", 0.4, 5), ("AutoContrast", 0.9, None)),
    (("TranslateY", 0.9, 9), ("TranslateY", 0.7, 9)),
    (("AutoContrast", 0.9, None), ("Solarize", 0.8, 3)),
    (("Equalize", 0.8, None), ("Invert", 0.1, None)),
    (("TranslateY", 0.7, 9), ("AutoContrast", 0.9, None)),
)


def _magnitude_bins(size: int, num_bins: int = 10) -> dict[str, tuple[np.ndarray, bool]]:
    """torchvision's AutoAugment magnitude table: op -> (bin values, signed)."""

    def lin(a, b):  # torch.linspace's float32 arithmetic, so magnitudes match bit for bit
        a, b = np.float32(a), np.float32(b)
        step = (b - a) / np.float32(num_bins - 1)
        i = np.arange(num_bins)
        up = a + step * i.astype(np.float32)
        down = b - step * (num_bins - 1 - i).astype(np.float32)
        return np.where(i < num_bins // 2, up, down).astype(np.float64)

    return {
        "ShearX": (lin(0.0, 0.3), True),
        "ShearY": (lin(0.0, 0.3), True),
        "TranslateX": (lin(0.0, 150.0 / 331.0 * size), True),
        "TranslateY": (lin(0.0, 150.0 / 331.0 * size), True),
        "Rotate": (lin(0.0, 30.0), True),
        "Brightness": (lin(0.0, 0.9), True),
        "Color": (lin(0.0, 0.9), True),
        "Contrast": (lin(0.0, 0.9), True),
        "Sharpness": (lin(0.0, 0.9), True),
        "Posterize": (8 - np.round(np.arange(num_bins) / ((num_bins - 1) / 4)), False),
        "Solarize": (lin(255.0, 0.0), False),
        "AutoContrast": (np.zeros(num_bins), False),
        "Equalize": (np.zeros(num_bins), False),
        "Invert": (np.zeros(num_bins), False),
    }


_AUTOAUGMENT_OPS = {
    "ShearX": lambda x, m: _shear(x, m, 0),
    "ShearY": lambda x, m: _shear(x, m, 1),
    "TranslateX": lambda x, m: _translate(x, m, 0),
    "TranslateY": lambda x, m: _translate(x, m, 1),
    "Rotate": lambda x, m: rotate(x, m),
    "Brightness": lambda x, m: adjust_brightness(x, 1.0 + m),
    "Color": lambda x, m: adjust_saturation(x, 1.0 + m),
    "Contrast": lambda x, m: adjust_contrast(x, 1.0 + m),
    "Sharpness": lambda x, m: adjust_sharpness(x, 1.0 + m),
    "Posterize": lambda x, m: posterize(x, m.astype(np.int64)),
    "Solarize": lambda x, m: solarize(x, m),
    "AutoContrast": lambda x, m: autocontrast(x),
    "Equalize": lambda x, m: equalize(x),
    "Invert": lambda x, m: invert(x),
}


def autoaugment(
    images: np.ndarray, policy_u: np.ndarray, prob_u: np.ndarray, sign_u: np.ndarray
) -> np.ndarray:
    """torchvision ``AutoAugment(AutoAugmentPolicy.CIFAR10)`` on a batch.

    ``policy_u`` (N,), ``prob_u`` and ``sign_u`` (N, 2) are uniform [0, 1) draws: the
    sub-policy, whether each of its two ops applies, and the sign of its magnitude.
    Images are grouped by op so each op runs once per batch on the images it applies to.
    """
    n, h, w, _ = images.shape
    table = _magnitude_bins(min(h, w))
    policy = np.minimum((policy_u * len(CIFAR10_POLICY)).astype(np.int64), len(CIFAR10_POLICY) - 1)
    out = images.copy()
    for stage in range(2):
        names = np.array([CIFAR10_POLICY[p][stage][0] for p in policy])
        probs = np.array([CIFAR10_POLICY[p][stage][1] for p in policy])
        bins = np.array([CIFAR10_POLICY[p][stage][2] or 0 for p in policy])
        applies = prob_u[:, stage] <= probs
        for name in np.unique(names[applies]):
            idx = np.flatnonzero(applies & (names == name))
            values, signed = table[name]
            magnitude = values[bins[idx]]
            if signed:
                magnitude = np.where(sign_u[idx, stage] < 0.5, -magnitude, magnitude)
            out[idx] = _AUTOAUGMENT_OPS[name](out[idx], magnitude)
    return out


# ------------------------------------------------------------- jitter, erasing, cutout


def color_jitter(
    images: np.ndarray,
    factor_u: np.ndarray,
    order_u: np.ndarray,
    brightness: float,
    contrast: float,
    saturation: float,
    hue: float = 0.0,
) -> np.ndarray:
    """torchvision ``ColorJitter(brightness, contrast, saturation, hue)``: per image,
    factors uniform in ``[max(0, 1 - s), 1 + s]`` and a hue factor uniform in ``[-hue,
    hue]``, the ops applied in a random order. ``factor_u`` and ``order_u`` are (N, 3)
    uniform draws (N, 4 with hue): column k is op k's factor and its sort key in the
    order (brightness, contrast, saturation, hue). A strength of 0 turns its op off; the
    other ops keep their relative order, so hue 0 with 4 columns equals 3 columns."""
    strengths = (brightness, contrast, saturation, hue)
    ops = (adjust_brightness, adjust_contrast, adjust_saturation, adjust_hue)
    num_ops = factor_u.shape[1]
    if hue > 0 and num_ops < 4:
        raise ValueError("color_jitter with hue needs (N, 4) factor_u and order_u draws")
    lo = np.array([max(0.0, 1.0 - s) for s in strengths[:3]] + [-hue])[:num_ops]
    hi = np.array([1.0 + s for s in strengths[:3]] + [hue])[:num_ops]
    factors = lo + factor_u * (hi - lo)
    order = np.argsort(order_u, axis=1, kind="stable")
    active = list(zip(strengths, ops, strict=True))[:num_ops]
    out = images.copy()
    for position in range(num_ops):
        for op_id, (strength, op) in enumerate(active):
            if strength <= 0:
                continue
            idx = np.flatnonzero(order[:, position] == op_id)
            if len(idx):
                out[idx] = op(out[idx], factors[idx, op_id])
    return out


def erasing_boxes(
    apply_u: np.ndarray,
    area_u: np.ndarray,
    ratio_u: np.ndarray,
    pos_u: np.ndarray,
    *,
    size: tuple[int, int],
    p: float,
    scale: tuple[float, float],
    ratio: tuple[float, float],
) -> np.ndarray:
    """torchvision ``RandomErasing.get_params`` for N images: (N, 4) boxes ``(i, j, h, w)``.

    An image is erased with probability ``p``; its box has an area fraction uniform in
    ``scale`` and a log-uniform aspect ratio in ``ratio``; of ``area_u``/``ratio_u``'s
    (N, 10) tries the first box that fits is used, and none (h = w = 0) if none fits.
    """
    img_h, img_w = size
    area = img_h * img_w
    erase_area = area * (scale[0] + area_u * (scale[1] - scale[0]))
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    aspect = np.exp(log_lo + ratio_u * (log_hi - log_lo))
    h = np.rint(np.sqrt(erase_area * aspect)).astype(np.int64)
    w = np.rint(np.sqrt(erase_area / aspect)).astype(np.int64)
    fits = (h < img_h) & (w < img_w)
    first = np.argmax(fits, axis=1)
    rows = np.arange(len(h))
    ok = fits[rows, first] & (apply_u < p)
    h, w = np.where(ok, h[rows, first], 0), np.where(ok, w[rows, first], 0)
    i = np.floor(pos_u[:, 0] * (img_h - h + 1)).astype(np.int64)
    j = np.floor(pos_u[:, 1] * (img_w - w + 1)).astype(np.int64)
    return np.stack([i, j, h, w], axis=1)


def fill_boxes(images: np.ndarray, boxes: np.ndarray, fill) -> np.ndarray:
    """Sets each image's box ``(i, j, h, w)`` to ``fill`` (one value per channel)."""
    _, img_h, img_w, _ = images.shape
    i, j, h, w = (boxes[:, k, None] for k in range(4))
    rows = np.arange(img_h)[None, :]
    cols = np.arange(img_w)[None, :]
    in_rows = (rows >= i) & (rows < i + h)  # (N, H)
    in_cols = (cols >= j) & (cols < j + w)  # (N, W)
    mask = in_rows[:, :, None] & in_cols[:, None, :]
    return np.where(mask[..., None], np.asarray(fill, np.uint8), images)


def cutout_boxes(center_u: np.ndarray, size: int, image_size: tuple[int, int]) -> np.ndarray:
    """Cutout (DeVries & Taylor 2017): a ``size`` x ``size`` square centred on a uniform
    random pixel, clipped at the border; returns (N, 4) boxes ``(i, j, h, w)``."""
    img_h, img_w = image_size
    cy = np.floor(center_u[:, 0] * img_h).astype(np.int64)
    cx = np.floor(center_u[:, 1] * img_w).astype(np.int64)
    y1, y2 = np.clip(cy - size // 2, 0, img_h), np.clip(cy + size // 2, 0, img_h)
    x1, x2 = np.clip(cx - size // 2, 0, img_w), np.clip(cx + size // 2, 0, img_w)
    return np.stack([y1, x1, y2 - y1, x2 - x1], axis=1)


# ------------------------------------------------------------------- the batch


def sample_params(rng: np.random.Generator, n: int, aug: AugmentConfig) -> dict[str, np.ndarray]:
    """Every random number of a batch of ``n``, in a fixed order and count (see module doc).

    ``aug`` only sets the integer ranges the uniform draws are mapped to (crop offsets).
    """
    u = {}
    u["crop"] = rng.random((n, 2))
    u["flip"] = rng.random(n)
    u["aa_policy"] = rng.random(n)
    u["aa_prob"] = rng.random((n, 2))
    u["aa_sign"] = rng.random((n, 2))
    u["jitter_factor"] = rng.random((n, 3))
    u["jitter_order"] = rng.random((n, 3))
    u["rotation"] = rng.random(n)
    u["erase_apply"] = rng.random(n)
    u["erase_area"] = rng.random((n, _ERASING_TRIES))
    u["erase_ratio"] = rng.random((n, _ERASING_TRIES))
    u["erase_pos"] = rng.random((n, 2))
    u["cutout"] = rng.random((n, 2))
    # Drawn last so that adding hue changed no earlier draw: its factor and order key.
    u["jitter_hue"] = rng.random((n, 2))
    span = 2 * aug.crop_padding + 1
    u["crop_offsets"] = np.minimum((u["crop"] * span).astype(np.int64), span - 1)
    return u


def _flip_mask(u: dict[str, np.ndarray], aug: AugmentConfig) -> np.ndarray:
    if aug.flip_mode == "random":
        return u["flip"] < 0.5
    if aug.flip_mode != "alternating":  # an AugmentConfig built by hand, not from a config
        raise ValueError(f"flip_mode={aug.flip_mode!r} is not known; use one of {FLIP_MODES}.")
    if "flip_mask" not in u:
        raise ValueError(
            "flip_mode='alternating' needs each image's flip for the epoch in "
            "u['flip_mask'] (alternating_flips(base_flips(seed, n)[indices], epoch)); the "
            "train pipeline sets it."
        )
    return np.asarray(u["flip_mask"], bool)


def apply_augmentations(
    images: np.ndarray, u: dict[str, np.ndarray], aug: AugmentConfig
) -> np.ndarray:
    """Applies the enabled augmentations of ``aug`` with the draws ``u`` (rows of
    :func:`sample_params`, plus ``u["flip_mask"]`` with ``flip_mode="alternating"``), in
    the module's fixed order."""
    size = images.shape[1:3]
    if aug.crop_padding:
        images = random_crop(images, u["crop_offsets"], aug.crop_padding, aug.crop_padding_mode)
    if aug.flip:
        images = random_flip(images, _flip_mask(u, aug))
    if aug.autoaugment == "cifar10":
        images = autoaugment(images, u["aa_policy"], u["aa_prob"], u["aa_sign"])
    if aug.brightness or aug.contrast or aug.saturation or aug.hue:
        images = color_jitter(
            images,
            np.concatenate([u["jitter_factor"], u["jitter_hue"][:, :1]], axis=1),
            np.concatenate([u["jitter_order"], u["jitter_hue"][:, 1:]], axis=1),
            aug.brightness,
            aug.contrast,
            aug.saturation,
            aug.hue,
        )
    if aug.rotation:
        angles = -aug.rotation + u["rotation"] * (2 * aug.rotation)
        images = rotate(images, angles)
    if aug.erasing_prob:
        boxes = erasing_boxes(
            u["erase_apply"],
            u["erase_area"],
            u["erase_ratio"],
            u["erase_pos"],
            size=size,
            p=aug.erasing_prob,
            scale=aug.erasing_scale,
            ratio=aug.erasing_ratio,
        )
        images = fill_boxes(images, boxes, aug.fill)
    if aug.cutout_size:
        images = fill_boxes(images, cutout_boxes(u["cutout"], aug.cutout_size, size), aug.fill)
    return np.ascontiguousarray(images)


# ------------------------------------------------------- mixup / cutmix (in the step)


@dataclasses.dataclass(frozen=True)
class MixConfig:
    """Mixup / cutmix of the train step (alpha 0 = off; both on: one of them per batch,
    each with probability 1/2, as timm's ``Mixup(switch_prob=0.5)``)."""

    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0

    @property
    def enabled(self) -> bool:
        return self.mixup_alpha > 0 or self.cutmix_alpha > 0

    @classmethod
    def from_config(cls, config) -> MixConfig | None:
        mix = cls(float(config.mixup_alpha), float(config.cutmix_alpha))
        return mix if mix.enabled else None


def mixup(images: jnp.ndarray, lam) -> jnp.ndarray:
    """``lam x_k + (1 - lam) x_{k-1}`` (the batch rolled by one)."""
    return lam * images + (1.0 - lam) * jnp.roll(images, 1, axis=0)


def cutmix(images: jnp.ndarray, lam, cy, cx) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Pastes x_{k-1}'s box into x_k; returns the images and the kept area fraction.

    torchvision v2 ``CutMix``: half sides ``int(0.5 sqrt(1 - lam) H)`` and ``... W``
    around the pixel (cy, cx), clipped at the border.
    """
    _, h, w, _ = images.shape
    r = 0.5 * jnp.sqrt(1.0 - lam)
    half_h, half_w = jnp.floor(r * h), jnp.floor(r * w)
    y1, y2 = jnp.maximum(cy - half_h, 0), jnp.minimum(cy + half_h, h)
    x1, x2 = jnp.maximum(cx - half_w, 0), jnp.minimum(cx + half_w, w)
    rows, cols = jnp.arange(h)[:, None], jnp.arange(w)[None, :]
    box = (rows >= y1) & (rows < y2) & (cols >= x1) & (cols < x2)
    out = jnp.where(box[None, :, :, None], jnp.roll(images, 1, axis=0), images)
    return out, 1.0 - (y2 - y1) * (x2 - x1) / (h * w)


def mix_batch(
    key: jax.Array, images: jnp.ndarray, mix: MixConfig
) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Mixes each image of a (global, normalized) batch with its neighbour in the batch.

    torchvision v2 ``MixUp`` / ``CutMix`` semantics: image k is mixed with image k - 1
    (the batch order is already random) with one ``lam ~ Beta(alpha, alpha)`` per batch;
    cutmix's box centre is a uniform random pixel. Returns the mixed images and ``lam``,
    the weight of each image's own label (see :func:`mixed_targets`). All randomness
    comes from ``key``, so it is a function of (seed, step) for the global batch.
    """
    k_choice, k_mix, k_cut, k_box = jax.random.split(key, 4)
    _, h, w, _ = images.shape
    results = []
    if mix.mixup_alpha > 0:
        lam = jax.random.beta(k_mix, mix.mixup_alpha, mix.mixup_alpha)
        results.append((mixup(images, lam), lam))
    if mix.cutmix_alpha > 0:
        lam = jax.random.beta(k_cut, mix.cutmix_alpha, mix.cutmix_alpha)
        cy, cx = jnp.floor(jax.random.uniform(k_box, (2,)) * jnp.array([h, w]))
        results.append(cutmix(images, lam, cy, cx))
    if len(results) == 1:
        out, lam = results[0]
    else:  # both: cutmix with probability 1/2 (timm's switch_prob)
        use_cutmix = jax.random.bernoulli(k_choice, 0.5)
        out = jnp.where(use_cutmix, results[1][0], results[0][0])
        lam = jnp.where(use_cutmix, results[1][1], results[0][1])
    return out.astype(images.dtype), jnp.asarray(lam, jnp.float32)


def mixed_targets(labels: jnp.ndarray, lam: jnp.ndarray, num_classes: int) -> jnp.ndarray:
    """Soft targets ``lam onehot(y_k) + (1 - lam) onehot(y_{k-1})`` matching :func:`mix_batch`."""
    own = jax.nn.one_hot(labels, num_classes)
    return lam * own + (1.0 - lam) * jnp.roll(own, 1, axis=0)


__all__ = [
    "AUTOAUGMENT_POLICIES",
    "AugmentConfig",
    "CIFAR10_POLICY",
    "CROP_PADDING_MODES",
    "FLIP_MODES",
    "MixConfig",
    "adjust_brightness",
    "adjust_contrast",
    "adjust_hue",
    "adjust_saturation",
    "adjust_sharpness",
    "affine_nearest",
    "alternating_flips",
    "apply_augmentations",
    "autoaugment",
    "autocontrast",
    "base_flips",
    "color_jitter",
    "cutout_boxes",
    "equalize",
    "erasing_boxes",
    "fill_boxes",
    "grayscale",
    "invert",
    "inverse_affine_matrices",
    "cutmix",
    "mix_batch",
    "mixed_targets",
    "mixup",
    "posterize",
    "random_crop",
    "random_flip",
    "rotate",
    "sample_params",
    "solarize",
]
