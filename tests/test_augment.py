"""Training augmentations: each op's definition, torchvision equivalence on real images,
fixed-order randomness, process-independence, mixup / cutmix, and an unaugmented eval.

The torchvision golden values (sha256 of whole augmented batches) come from
``python scripts/torchvision_golden.py``, which recomputes each of them with torchvision
from the same images and draws as the test and prints the assertion to paste here; it
needs torch and torchvision, which the tests don't."""

import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cifar_jax import config as config_lib
from cifar_jax import validation
from cifar_jax.data import ArraySplit, augment, pipeline
from cifar_jax.errors import ConfigError

EVERYTHING = pipeline.AugmentConfig(
    crop_padding=4,
    flip=True,
    autoaugment="cifar10",
    brightness=0.2,
    contrast=0.2,
    saturation=0.2,
    hue=0.1,
    rotation=15.0,
    erasing_prob=0.5,
    erasing_scale=(0.02, 0.2),
    cutout_size=8,
    fill=(128, 128, 128),
)


def _images(n=16, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def cifar_images(real_data_root):
    """The first 64 images of the real CIFAR-10 test batch (binary release), NHWC."""
    path = real_data_root / "cifar10" / "cifar-10-batches-bin" / "test_batch.bin"
    records = np.fromfile(path, np.uint8, count=64 * 3073).reshape(64, 3073)
    return records[:, 1:].reshape(64, 3, 32, 32).transpose(0, 2, 3, 1).copy()


def _sha(x):
    return hashlib.sha256(np.ascontiguousarray(x).tobytes()).hexdigest()


# ------------------------------------------------------------------ geometry


def test_flip_twice_is_identity():
    images, flags = _images(), np.arange(16) % 3 == 0
    once = augment.random_flip(images, flags)
    np.testing.assert_array_equal(once[0], images[0, :, ::-1])
    np.testing.assert_array_equal(once[1], images[1])
    np.testing.assert_array_equal(augment.random_flip(once, flags), images)
    before = images.copy()
    everything = augment.random_flip(images, np.ones(16, bool))
    np.testing.assert_array_equal(everything, images[:, :, ::-1])
    np.testing.assert_array_equal(augment.random_flip(images, np.zeros(16, bool)), images)
    np.testing.assert_array_equal(images, before)  # the input is never modified


def test_rotation_by_0_is_identity_and_by_90_is_rot90():
    images = _images(4)
    np.testing.assert_array_equal(augment.rotate(images, np.zeros(4)), images)
    # Positive angles turn counter-clockwise, as torchvision's F.rotate.
    np.testing.assert_array_equal(
        augment.rotate(images, np.full(4, 90.0)), np.rot90(images, 1, (1, 2))
    )
    np.testing.assert_array_equal(
        augment.rotate(images, np.full(4, -90.0)), np.rot90(images, -1, (1, 2))
    )
    np.testing.assert_array_equal(augment.rotate(images, np.full(4, 180.0)), images[:, ::-1, ::-1])
    # 45 degrees: the corners come from outside the image and are filled with 0.
    turned = augment.rotate(images, np.full(4, 45.0))
    assert not turned[:, 0, 0].any() and not turned[:, -1, -1].any()
    np.testing.assert_array_equal(turned[:, 16, 16], images[:, 16, 16])  # ~ the centre


def test_rotation_matches_torchvision_on_real_images(cifar_images):
    # Reference: sha256 of torchvision 0.28 F.rotate(uint8 tensor, angle) (nearest, fill 0)
    # of the same 64 images with these angles (scripts/torchvision_golden.py).
    angles = np.random.default_rng(0).uniform(-30, 30, 64)
    got = augment.rotate(cifar_images, angles)
    assert _sha(got) == "bac203cc1877ffe755067a29c4f4d7e4c8f856574dd3786080d5f6ff121c8b8c"


def test_affine_gather_equals_plain_indexing_with_fill():
    # affine_nearest gathers whole pixels through one flat index (augment.take_pixels);
    # it must equal the plain (image, row, col) lookup, for uint8 and float images and a
    # per-channel fill outside.
    angles = np.random.default_rng(1).uniform(-40, 40, 8)
    zeros = np.zeros(8)
    matrices = augment.inverse_affine_matrices((0.0, 0.0), -angles, (zeros, zeros), (zeros, zeros))
    fill = (7, 128, 255)
    for images in (_images(8, seed=3), _images(8, seed=4).astype(np.float32) / 255):
        got = augment.affine_nearest(images, matrices, fill)
        n, h, w, _ = images.shape
        ys, xs = np.meshgrid(np.arange(h) - h / 2 + 0.5, np.arange(w) - w / 2 + 0.5, indexing="ij")
        for k in range(n):
            m = matrices[k]
            # grid_sample(align_corners=False) of the normalized affine grid, by hand.
            col = np.rint(m[0, 0] * xs + m[0, 1] * ys + m[0, 2] + w / 2 - 0.5).astype(int)
            row = np.rint(m[1, 0] * xs + m[1, 1] * ys + m[1, 2] + h / 2 - 0.5).astype(int)
            inside = (col >= 0) & (col < w) & (row >= 0) & (row < h)
            want = np.where(
                inside[..., None],
                images[k][row.clip(0, h - 1), col.clip(0, w - 1)],
                np.asarray(fill, images.dtype),
            )
            # float64 by hand vs torchvision's float32 grid: rounding ties may differ.
            assert np.mean(np.all(got[k] == want, axis=-1)) > 0.99
        assert got.dtype == images.dtype and got.flags.c_contiguous


# --------------------------------------------------------------------- colour


def test_color_ops_by_hand():
    images = _images(3)
    one = np.ones(3)
    for op in (augment.adjust_brightness, augment.adjust_contrast, augment.adjust_saturation):
        np.testing.assert_array_equal(op(images, one), images)  # factor 1: unchanged
    x = images.astype(np.float32)
    np.testing.assert_array_equal(
        augment.adjust_brightness(images, 0.5 * one), (0.5 * x).astype(np.uint8)
    )
    gray = (0.2989 * x[..., 0] + 0.587 * x[..., 1] + 0.114 * x[..., 2]).astype(np.uint8)
    desaturated = augment.adjust_saturation(images, 0 * one)
    np.testing.assert_array_equal(desaturated, np.repeat(gray[..., None], 3, axis=-1))
    flat = augment.adjust_contrast(images, 0 * one)  # every pixel the mean gray
    means = gray.reshape(3, -1).mean(axis=1)
    np.testing.assert_array_equal(
        flat, np.broadcast_to(means.astype(np.uint8)[:, None, None, None], flat.shape)
    )


def test_color_jitter_with_zero_strength_is_identity():
    images = _images()
    rng = np.random.default_rng(0)
    u, order = rng.random((16, 3)), rng.random((16, 3))
    np.testing.assert_array_equal(augment.color_jitter(images, u, order, 0.0, 0.0, 0.0), images)
    # Draws at the middle of the range give factor 1 for any strength.
    np.testing.assert_array_equal(
        augment.color_jitter(images, np.full((16, 3), 0.5), order, 0.4, 0.4, 0.4), images
    )
    assert not np.array_equal(augment.color_jitter(images, u, order, 0.4, 0.4, 0.4), images)


def test_color_jitter_matches_torchvision_on_real_images(cifar_images):
    # Reference: torchvision 0.28 ColorJitter(0.2, 0.3, 0.4) with get_params returning the
    # same factors and op order, per image (scripts/torchvision_golden.py).
    rng = np.random.default_rng(2)
    u, order = rng.random((64, 3)), rng.random((64, 3))
    got = augment.color_jitter(cifar_images, u, order, 0.2, 0.3, 0.4)
    assert _sha(got) == "febdccf8afda4173519e913f02da6c157db4c3ebffc77d276d20a2c2e92b97e6"


def _torchvision_adjust_hue(images, factors):
    """torchvision 0.2x ``F.adjust_hue`` on uint8 CHW tensors (``_functional_tensor``'s
    ``convert_image_dtype``, ``_rgb2hsv``, ``_hsv2rgb``), written out in torch, one image
    and its Python-float factor at a time as ColorJitter calls it."""
    import torch

    def rgb2hsv(img):
        r, g, b = img.unbind(dim=-3)
        maxc, minc = torch.max(img, dim=-3).values, torch.min(img, dim=-3).values
        eqc = maxc == minc
        cr = maxc - minc
        ones = torch.ones_like(maxc)
        s = cr / torch.where(eqc, ones, maxc)
        cr_divisor = torch.where(eqc, ones, cr)
        rc, gc, bc = (maxc - r) / cr_divisor, (maxc - g) / cr_divisor, (maxc - b) / cr_divisor
        hr = (maxc == r) * (bc - gc)
        hg = ((maxc == g) & (maxc != r)) * (2.0 + rc - bc)
        hb = ((maxc != g) & (maxc != r)) * (4.0 + gc - rc)
        h = torch.fmod(((hr + hg + hb) / 6.0 + 1.0), 1.0)
        return torch.stack((h, s, maxc), dim=-3)

    def hsv2rgb(img):
        h, s, v = img.unbind(dim=-3)
        i = torch.floor(h * 6.0)
        f = (h * 6.0) - i
        i = i.to(dtype=torch.int32)
        p = torch.clamp((v * (1.0 - s)), 0.0, 1.0)
        q = torch.clamp((v * (1.0 - s * f)), 0.0, 1.0)
        t = torch.clamp((v * (1.0 - s * (1.0 - f))), 0.0, 1.0)
        i = i % 6
        mask = i.unsqueeze(dim=-3) == torch.arange(6).view(-1, 1, 1)
        a1 = torch.stack((v, q, p, p, t, v), dim=-3)
        a2 = torch.stack((t, v, v, q, p, p), dim=-3)
        a3 = torch.stack((p, p, t, v, v, q), dim=-3)
        a4 = torch.stack((a1, a2, a3), dim=-4)
        return torch.einsum("...ijk, ...xijk -> ...xjk", mask.to(dtype=img.dtype), a4)

    out = []
    for image, factor in zip(images, factors, strict=True):
        img = torch.from_numpy(image.transpose(2, 0, 1).copy()).to(torch.float32) / 255.0
        hsv = rgb2hsv(img)
        h, s, v = hsv.unbind(dim=-3)
        h = (h + float(factor)) % 1.0
        rgb = hsv2rgb(torch.stack((h, s, v), dim=-3))
        out.append(rgb.mul(255.0 + 1.0 - 1e-3).to(torch.uint8).numpy().transpose(1, 2, 0))
    return np.stack(out)


def _hue_test_images():
    """Random images plus grays, primaries and 1-level steps (hue's special cases)."""
    images = _images(24, seed=7)
    images[0] = 128  # gray: max == min
    images[1, ..., :] = (255, 0, 0)
    images[2, ..., :] = (0, 255, 0)
    images[3, :, :16] = (255, 255, 0)
    images[3, :, 16:] = (1, 0, 0)
    images[4] = np.arange(32 * 32 * 3).reshape(32, 32, 3) % 256  # near-gray steps
    return images


def test_hue_shift_by_hand():
    red = np.zeros((1, 2, 2, 3), np.uint8)
    red[..., 0] = 255
    # Hue is a turn: +1/3 takes red to green, -1/3 (= +2/3) to blue, 1/2 to cyan.
    np.testing.assert_array_equal(augment.adjust_hue(red, 1 / 3)[0, 0, 0], [0, 255, 0])
    np.testing.assert_array_equal(augment.adjust_hue(red, -1 / 3)[0, 0, 0], [0, 0, 255])
    np.testing.assert_array_equal(augment.adjust_hue(red, 0.5)[0, 0, 0], [0, 255, 255])
    np.testing.assert_array_equal(augment.adjust_hue(red, -0.5)[0, 0, 0], [0, 255, 255])
    gray = np.full((1, 2, 2, 3), 77, np.uint8)  # no hue: unchanged by any shift
    np.testing.assert_array_equal(augment.adjust_hue(gray, 0.3), gray)
    # Against the standard library's HSV (float64): within one level of the float32
    # arithmetic and torchvision's x * 255.999 truncation.
    import colorsys

    images, factors = _hue_test_images(), np.linspace(-0.5, 0.5, 24)
    got = augment.adjust_hue(images, factors).astype(int)
    for k in (0, 3, 4, 5, 17):
        for i, j in ((0, 0), (5, 20), (31, 31)):
            h, s, v = colorsys.rgb_to_hsv(*(images[k, i, j] / 255.0))
            rgb = np.array(colorsys.hsv_to_rgb((h + factors[k]) % 1.0, s, v)) * 255.999
            assert np.all(np.abs(got[k, i, j] - rgb.astype(int)) <= 1), (k, i, j)


def test_hue_matches_torchvision_in_torch():
    pytest.importorskip("torch")
    images = _hue_test_images()
    factors = np.random.default_rng(3).uniform(-0.5, 0.5, len(images)).astype(np.float32)
    factors[:3] = (0.5, -0.5, 0.0)
    want = _torchvision_adjust_hue(images, factors)
    np.testing.assert_array_equal(augment.adjust_hue(images, factors), want)


def test_color_jitter_hue_is_a_fourth_op_in_the_random_order():
    images = _images()
    rng = np.random.default_rng(4)
    u4, order4 = rng.random((16, 4)), rng.random((16, 4))
    # Hue 0 with four columns: exactly the three-op jitter (hue off, same order).
    np.testing.assert_array_equal(
        augment.color_jitter(images, u4, order4, 0.4, 0.4, 0.4, 0.0),
        augment.color_jitter(images, u4[:, :3], order4[:, :3], 0.4, 0.4, 0.4),
    )
    # Hue alone: hue_factor = -h + u * 2h, per image.
    got = augment.color_jitter(images, u4, order4, 0.0, 0.0, 0.0, 0.2)
    np.testing.assert_array_equal(got, augment.adjust_hue(images, -0.2 + u4[:, 3] * 0.4))
    # With brightness: the op with the smaller order key runs first.
    got = augment.color_jitter(images, u4, order4, 0.5, 0.0, 0.0, 0.2)
    for k in range(16):
        b, h = 0.5 + u4[k, 0], -0.2 + u4[k, 3] * 0.4
        one = images[k : k + 1]
        if order4[k, 0] < order4[k, 3]:
            want = augment.adjust_hue(augment.adjust_brightness(one, b), h)
        else:
            want = augment.adjust_brightness(augment.adjust_hue(one, h), b)
        np.testing.assert_array_equal(got[k : k + 1], want)
    with pytest.raises(ValueError, match="hue"):
        augment.color_jitter(images, u4[:, :3], order4[:, :3], 0.0, 0.0, 0.0, 0.2)


def test_color_jitter_with_hue_from_the_config():
    config = config_lib.base_config()
    config.color_jitter_hue = 0.1
    aug = pipeline.AugmentConfig.from_config(config)
    assert aug.hue == 0.1
    images = _images(32)
    u = augment.sample_params(np.random.default_rng(0), 32, aug)
    out = augment.apply_augmentations(images, u, aug)
    # Only the draws hue was given (drawn last) differ from the plain crop + flip batch.
    plain = pipeline.AugmentConfig.from_config(config_lib.base_config())
    base = augment.apply_augmentations(images, u, plain)
    factors = -0.1 + u["jitter_hue"][:, 0] * 0.2
    np.testing.assert_array_equal(out, augment.adjust_hue(base, factors))
    # Reference: torchvision 0.28 RandomCrop(32, padding=4), RandomHorizontalFlip and
    # ColorJitter(hue=0.1) with these draws (scripts/torchvision_golden.py). First computed
    # by this package and checked against the torch transcription above; torchvision's own
    # transforms give the same.
    assert _sha(out) == "de0ada57dd13bc0377acce433c8ff0b63a918bb252110ece6552b76ba1203cd2"
    for bad in (-0.1, 0.6):
        config.color_jitter_hue = bad
        with pytest.raises(ConfigError, match="color_jitter_hue"):
            validation.validate_config(config)


# ----------------------------------------------------------------- AutoAugment


def test_autoaugment_policy_is_torchvision_cifar10():
    assert len(augment.CIFAR10_POLICY) == 25
    assert augment.CIFAR10_POLICY[0] == (("Invert", 0.1, None), ("Contrast", 0.2, 6))
    assert augment.CIFAR10_POLICY[-1] == (("TranslateY", 0.7, 9), ("AutoContrast", 0.9, None))


def test_autoaugment_shape_dtype_and_determinism_per_seed():
    images = _images(64)

    def run(seed):
        rng = np.random.default_rng(seed)
        return augment.autoaugment(images, rng.random(64), rng.random((64, 2)), rng.random((64, 2)))

    a, b, c = run(0), run(0), run(1)
    assert a.shape == images.shape and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    changed = np.any(a != images, axis=(1, 2, 3))
    assert 0.3 < changed.mean() < 1.0  # most sub-policies fire; some images stay as they are


def test_autoaugment_matches_torchvision_on_real_images(cifar_images):
    # Reference: torchvision 0.28 AutoAugment(AutoAugmentPolicy.CIFAR10) on uint8 tensors,
    # with get_params returning these sub-policies, probabilities and signs
    # (scripts/torchvision_golden.py).
    rng = np.random.default_rng(1)
    got = augment.autoaugment(
        cifar_images, rng.random(64), rng.random((64, 2)), rng.random((64, 2))
    )
    assert _sha(got) == "89ab060e15e2ab8497a563fa1491ef28a384d0dffe44308ccfe72adf7860416b"


def test_autoaugment_ops_by_hand():
    images = _images(2)
    np.testing.assert_array_equal(augment.invert(images), 255 - images)
    np.testing.assert_array_equal(augment.posterize(images, np.array([4, 4])), images & 0xF0)
    solar = augment.solarize(images, np.array([128.0, 128.0]))
    np.testing.assert_array_equal(solar, np.where(images >= 128, 255 - images, images))
    # TranslateX by +3 px moves content right (zero fill), truncating the magnitude.
    moved = augment._AUTOAUGMENT_OPS["TranslateX"](images, np.array([3.7, 3.7]))
    np.testing.assert_array_equal(moved[:, :, 3:], images[:, :, :-3])
    assert not moved[:, :, :3].any()
    stretched = augment.autocontrast(images // 4 + 10)
    assert stretched.min() == 0 and stretched.max() == 255
    equalized = augment.equalize(images // 8)
    assert equalized.max() > 200  # a dark image spread over the range


# ----------------------------------------------------------- erasing and cutout


def test_random_erasing_changes_only_a_rectangle():
    images = _images(64)
    rng = np.random.default_rng(0)
    boxes = augment.erasing_boxes(
        rng.random(64), rng.random((64, 10)), rng.random((64, 10)), rng.random((64, 2)),
        size=(32, 32), p=0.5, scale=(0.02, 0.2), ratio=(0.3, 3.3),
    )  # fmt: skip
    erased = augment.fill_boxes(images, boxes, (1, 2, 3))
    hit = boxes[:, 2] > 0
    assert 0.3 < hit.mean() < 0.7  # p = 0.5
    for k in range(64):
        i, j, h, w = boxes[k]
        inside = np.zeros((32, 32), bool)
        inside[i : i + h, j : j + w] = True
        np.testing.assert_array_equal(erased[k][~inside], images[k][~inside])
        assert np.all(erased[k][inside] == [1, 2, 3])
        if h:
            assert 0.02 * 1024 - 32 <= h * w <= 0.2 * 1024 + 32  # rounding of the sides
            assert 0.3 / 1.5 <= h / w <= 3.3 * 1.5


def test_cutout_fills_a_square():
    images = _images(3) | 1  # no zero pixels in the input
    centers = np.array([[0.5, 0.5], [0.0, 0.0], [0.99, 0.5]])  # middle, corner, bottom edge
    boxes = augment.cutout_boxes(centers, 8, (32, 32))
    out = augment.fill_boxes(images, boxes, (0, 0, 0))
    zero = np.all(out == 0, axis=-1)
    assert zero[0].sum() == 64 and zero[0, 12:20, 12:20].all()  # centre pixel 16: 12..19
    assert zero[1].sum() == 16 and zero[1, :4, :4].all()  # clipped at the corner
    assert zero[2].sum() == 5 * 8 and zero[2, 27:32, 12:20].all()  # centre row 31: 27..31
    np.testing.assert_array_equal(out[~zero], images[~zero])


# ------------------------------------------------------------------ the batch


def test_randomness_is_drawn_in_a_fixed_order():
    plain = pipeline.AugmentConfig(crop_padding=4, flip=True)
    a = augment.sample_params(np.random.default_rng(3), 32, plain)
    b = augment.sample_params(np.random.default_rng(3), 32, EVERYTHING)
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    # Turning on cutout only adds its square: outside it, the crop+flip batch is unchanged.
    images = _images(32)
    base = augment.apply_augmentations(images, a, plain)
    with_cutout = augment.apply_augmentations(
        images, a, pipeline.AugmentConfig(crop_padding=4, flip=True, cutout_size=8)
    )
    differ = np.any(base != with_cutout, axis=-1)
    assert differ.any() and differ.sum(axis=(1, 2)).max() <= 64


def _split(n=96):
    images = _images(n, seed=5)
    return ArraySplit(images=images, labels=(np.arange(n) % 10).astype(np.int32))


def test_every_augmentation_is_identical_for_any_process_count():
    split = _split()
    kw = dict(global_batch_size=16, num_steps=2, seed=0, aug=EVERYTHING)
    whole = pipeline.train_dataset(split, **kw)
    parts = [
        pipeline.train_dataset(split, process_index=p, process_count=4, **kw) for p in range(4)
    ]
    for step in range(2):
        joined = np.concatenate([parts[p][step]["image"] for p in range(4)])
        np.testing.assert_array_equal(joined, whole[step]["image"])
        np.testing.assert_array_equal(
            np.concatenate([parts[p][step]["label"] for p in range(4)]), whole[step]["label"]
        )


def test_eval_is_never_augmented():
    split = _split(40)
    train_batch = pipeline.train_dataset(
        split, global_batch_size=16, num_steps=1, seed=0, aug=EVERYTHING
    )[0]
    assert train_batch["image"].dtype == np.uint8
    assert not np.array_equal(
        np.sort(train_batch["image"], axis=None), np.sort(split.images[:16], axis=None)
    )
    batches = list(pipeline.eval_dataset(split, global_batch_size=16))
    seen = np.concatenate([b["image"] for b in batches])[
        np.concatenate([b["mask"] for b in batches])
    ]
    np.testing.assert_array_equal(seen, split.images)


def test_augment_config_from_config_and_fill():
    config = config_lib.base_config()
    config.update(
        dict(autoaugment="cifar10", random_rotation=15.0, random_erasing_prob=0.5, cutout_size=16,
             color_jitter_brightness=0.2, random_erasing_scale=(0.02, 0.2))
    )  # fmt: skip
    aug = pipeline.AugmentConfig.from_config(config, mean=np.array([0.5, 0.5, 0.5]))
    assert aug.autoaugment == "cifar10" and aug.rotation == 15.0 and aug.cutout_size == 16
    assert aug.erasing_scale == (0.02, 0.2) and aug.brightness == 0.2
    assert aug.fill == (128, 128, 128)  # 0 after normalizing with mean 0.5
    assert pipeline.AugmentConfig.from_config(config).fill == (0, 0, 0)


def test_none_normalization_is_zero_one_scaling():
    config = config_lib.base_config()
    config.normalization = "none"
    mean, std = pipeline.normalization_stats(config, (0.4, 0.4, 0.4), (0.2, 0.2, 0.2))
    images = _images(2)
    np.testing.assert_allclose(
        np.asarray(pipeline.normalize(images, mean, std)), images / 255.0, rtol=1e-6
    )


# ---------------------------------------------------------------- mixup / cutmix


def test_mixup_with_lambda_one_is_identity_and_targets_sum_to_one():
    images = jnp.asarray(np.random.default_rng(0).normal(size=(6, 32, 32, 3)), jnp.float32)
    labels = jnp.array([0, 1, 2, 3, 4, 5])
    np.testing.assert_array_equal(augment.mixup(images, 1.0), images)
    np.testing.assert_allclose(
        augment.mixup(images, 0.25), 0.25 * images + 0.75 * jnp.roll(images, 1, 0), rtol=1e-6
    )
    same, lam = augment.cutmix(images, 1.0, 10.0, 10.0)
    np.testing.assert_array_equal(same, images)
    assert float(lam) == 1.0
    targets = augment.mixed_targets(labels, jnp.float32(0.3), 10)
    np.testing.assert_allclose(targets.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(targets[1, 1], 0.3, rtol=1e-6)  # own label
    np.testing.assert_allclose(targets[1, 0], 0.7, rtol=1e-6)  # the neighbour's
    np.testing.assert_array_equal(
        augment.mixed_targets(labels, jnp.float32(1.0), 10), jax.nn.one_hot(labels, 10)
    )


def test_cutmix_box_and_adjusted_lambda():
    images = jnp.asarray(np.random.default_rng(0).normal(size=(4, 32, 32, 3)), jnp.float32)
    # lam 0.75: half sides int(0.5 * 0.5 * 32) = 8 around (16, 16): a 16 x 16 box.
    out, lam = augment.cutmix(images, 0.75, 16.0, 16.0)
    pasted = np.asarray(jnp.any(out != images, axis=-1))
    assert pasted[:, 8:24, 8:24].all() and pasted.sum() == 4 * 256
    np.testing.assert_array_equal(out[:, 8:24, 8:24], jnp.roll(images, 1, 0)[:, 8:24, 8:24])
    assert float(lam) == pytest.approx(1 - 256 / 1024)
    _, lam = augment.cutmix(images, 0.75, 0.0, 0.0)  # clipped at the corner: 8 x 8
    assert float(lam) == pytest.approx(1 - 64 / 1024)


def test_mix_batch_is_a_function_of_the_key():
    images = jnp.asarray(np.random.default_rng(0).normal(size=(8, 32, 32, 3)), jnp.float32)
    mix = augment.MixConfig(mixup_alpha=0.4, cutmix_alpha=1.0)
    mix_batch = jax.jit(augment.mix_batch, static_argnums=2)
    a = mix_batch(jax.random.key(1), images, mix)
    b = mix_batch(jax.random.key(1), images, mix)
    c = mix_batch(jax.random.key(2), images, mix)
    np.testing.assert_array_equal(a[0], b[0])
    assert float(a[1]) == float(b[1]) and 0.0 <= float(a[1]) <= 1.0
    assert not np.array_equal(a[0], c[0])


MIX_SHARDED = textwrap.dedent(
    """
    import hashlib, json, jax, jax.numpy as jnp, numpy as np
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    from cifar_jax.data import augment
    assert jax.device_count() == 8
    images = jnp.asarray(np.random.default_rng(0).normal(size=(16, 32, 32, 3)), jnp.float32)
    mix = augment.MixConfig(mixup_alpha=0.4, cutmix_alpha=1.0)
    out = []
    for n in (1, 8):
        mesh = Mesh(np.asarray(jax.devices()[:n]), ("data",))
        sharded = jax.device_put(images, NamedSharding(mesh, P("data")))
        f = jax.jit(lambda k, x: augment.mix_batch(jax.random.fold_in(k, 7), x, mix))
        res = [f(jax.random.key(s), sharded) for s in range(4)]
        out.append([(hashlib.sha256(np.asarray(x).tobytes()).hexdigest(), float(l))
                    for x, l in res])
    print(json.dumps({"same": out[0] == out[1], "lams": [l for _, l in out[0]]}))
    """
)


def test_mixing_is_identical_on_one_and_eight_devices():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8")
    out = subprocess.run(
        [sys.executable, "-c", MIX_SHARDED], env=env, capture_output=True, text=True, timeout=300,
        cwd=Path(__file__).resolve().parents[1],
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["same"], result
    assert len(set(result["lams"])) == 4  # four keys, four different mixes


def test_augment_does_not_import_the_pipeline():
    """The pipeline imports the augmentation ops and their settings, never the reverse
    (no import circle): AugmentConfig lives in augment, pipeline re-exports it."""
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(augment))
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert not any("pipeline" in (name or "") for name in imported), imported
    assert pipeline.AugmentConfig is augment.AugmentConfig
