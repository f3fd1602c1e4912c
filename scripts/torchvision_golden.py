"""Recomputes, with torchvision, the golden sha256 values of tests/test_augment.py.

    python scripts/torchvision_golden.py [--data PATH/TO/shared/data]

Needs ``torch`` and ``torchvision`` (not dependencies of this project: install them where
you run this, e.g. the ``[bench]`` extra plus the matching torchvision) and the real
CIFAR-10 test batch (``shared/data`` next to the repo, ``$CIFAR_JAX_SHARED_DATA`` or
``--data``, as tests/conftest.py finds it). Without torchvision it says so and exits 1.

Each value is the sha256 of the NHWC uint8 batch that torchvision's own transforms (the
v1 ``torchvision.transforms`` on uint8 CHW tensors, one image at a time) produce from the
same images and the same random draws the test builds: the draws are the test's numpy
ones, handed to torchvision by replacing each transform's ``get_params`` (rotation and
jitter factors, op order, crop offsets, AutoAugment sub-policy / probabilities / signs).
Nothing of cifar_jax's own augmentation ops is used; only the inputs and the draws
(``sample_params``, the config) come from the package. The printed lines are the
test's assertions, to paste into tests/test_augment.py if torchvision changes.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import os
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def _sha(x: np.ndarray) -> str:
    """tests/test_augment.py's ``_sha``."""
    return hashlib.sha256(np.ascontiguousarray(x).tobytes()).hexdigest()


def _data_root(arg: str | None) -> Path:
    """The shared data folder, looked up as tests/conftest.py's ``real_data_root``."""
    candidates = [Path(arg)] if arg else []
    candidates.append(REPO.parent / "shared" / "data")
    if os.environ.get("CIFAR_JAX_SHARED_DATA"):
        candidates.append(Path(os.environ["CIFAR_JAX_SHARED_DATA"]))
    for root in candidates:
        if root.is_dir():
            return root
    raise SystemExit(
        f"error: CIFAR data not found (looked at {', '.join(map(str, candidates))}); "
        "pass --data PATH/TO/shared/data or set CIFAR_JAX_SHARED_DATA"
    )


def cifar_images(root: Path) -> np.ndarray:
    """The test's ``cifar_images`` fixture: the first 64 CIFAR-10 test images, NHWC."""
    path = root / "cifar10" / "cifar-10-batches-bin" / "test_batch.bin"
    records = np.fromfile(path, np.uint8, count=64 * 3073).reshape(64, 3073)
    return records[:, 1:].reshape(64, 3, 32, 32).transpose(0, 2, 3, 1).copy()


def _images(n: int = 16, seed: int = 0) -> np.ndarray:
    """The test's ``_images``."""
    return np.random.default_rng(seed).integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)


def _per_image(images: np.ndarray, transform) -> np.ndarray:
    """``transform(k, chw_uint8_tensor)`` on each image, back to one NHWC uint8 batch."""
    import torch

    out = []
    for k, image in enumerate(images):
        tensor = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
        result = transform(k, tensor)
        assert result.dtype == torch.uint8, result.dtype
        out.append(result.numpy().transpose(1, 2, 0))
    return np.stack(out)


def _with_params(transform, params):
    """``transform`` whose ``get_params`` returns ``params`` (the test's draws)."""
    transform.get_params = lambda *args, **kwargs: params
    return transform


def _color_jitter(images, factor_u, order_u, brightness, contrast, saturation, hue=0.0):
    """torchvision ``ColorJitter`` with the factors and op order the package draws from
    ``factor_u`` / ``order_u`` (cifar_jax.data.augment.color_jitter's docstring): factor
    ``lo + u * (hi - lo)`` over torchvision's range, ops in the order of their sort keys
    (stable argsort); with 3 columns hue is off and sits last in the permutation."""
    import torch
    from torchvision import transforms

    strengths = (brightness, contrast, saturation, hue)
    lo = [max(0.0, 1.0 - s) for s in strengths[:3]] + [-hue]
    hi = [1.0 + s for s in strengths[:3]] + [hue]
    columns = factor_u.shape[1]

    def one(k, img):
        order = [int(i) for i in np.argsort(order_u[k], kind="stable")]
        fn_idx = torch.tensor(order + [i for i in range(4) if i not in order])
        factors = [
            float(lo[i] + factor_u[k, i] * (hi[i] - lo[i]))
            if i < columns and strengths[i] > 0
            else None
            for i in range(4)
        ]
        jitter = transforms.ColorJitter(brightness, contrast, saturation, hue)
        return _with_params(jitter, (fn_idx, *factors))(img)

    return _per_image(images, one)


def rotation_golden(cifar: np.ndarray) -> str:
    """test_rotation_matches_torchvision_on_real_images: ``F.rotate`` (nearest, no
    expansion, fill 0) by angles uniform in [-30, 30] from ``default_rng(0)``."""
    from torchvision.transforms import functional as F

    angles = np.random.default_rng(0).uniform(-30, 30, 64)
    return _sha(_per_image(cifar, lambda k, img: F.rotate(img, float(angles[k]))))


def color_jitter_golden(cifar: np.ndarray) -> str:
    """test_color_jitter_matches_torchvision_on_real_images: ``ColorJitter(0.2, 0.3,
    0.4)``, factors and order from ``default_rng(2)``."""
    rng = np.random.default_rng(2)
    u, order = rng.random((64, 3)), rng.random((64, 3))
    return _sha(_color_jitter(cifar, u, order, 0.2, 0.3, 0.4))


def hue_golden() -> str:
    """test_color_jitter_with_hue_from_the_config: the base config (``RandomCrop(32,
    padding=4)``, ``RandomHorizontalFlip``) plus ``ColorJitter(hue=0.1)``, with the draws
    of ``sample_params(default_rng(0), 32, ...)`` on ``_images(32)``. (The test's value
    was first computed by cifar_jax itself and checked against the torch transcription
    ``_torchvision_adjust_hue`` of the test file; this recomputes it with torchvision.)"""
    from torchvision import transforms

    from cifar_jax import config as config_lib
    from cifar_jax.data import augment, pipeline

    config = config_lib.base_config()
    config.color_jitter_hue = 0.1
    aug = pipeline.AugmentConfig.from_config(config)
    assert aug.crop_padding == 4 and aug.flip and aug.autoaugment == "none"
    assert not (aug.brightness or aug.contrast or aug.saturation or aug.rotation)
    assert not (aug.erasing_prob or aug.cutout_size)
    images = _images(32)
    u = augment.sample_params(np.random.default_rng(0), 32, aug)

    def crop_and_flip(k, img):
        crop = transforms.RandomCrop(
            32, padding=aug.crop_padding, fill=0, padding_mode=aug.crop_padding_mode
        )
        top, left = (int(v) for v in u["crop_offsets"][k])
        img = _with_params(crop, (top, left, 32, 32))(img)
        return transforms.RandomHorizontalFlip(p=1.0 if u["flip"][k] < 0.5 else 0.0)(img)

    base = _per_image(images, crop_and_flip)
    factor_u = np.concatenate([u["jitter_factor"], u["jitter_hue"][:, :1]], axis=1)
    order_u = np.concatenate([u["jitter_order"], u["jitter_hue"][:, 1:]], axis=1)
    return _sha(_color_jitter(base, factor_u, order_u, 0.0, 0.0, 0.0, aug.hue))


def autoaugment_golden(cifar: np.ndarray) -> str:
    """test_autoaugment_matches_torchvision_on_real_images: ``AutoAugment(CIFAR10)``
    (nearest, fill 0) with the sub-policy ``int(u * 25)``, op k applied when ``prob_u[k]
    <= p`` and its magnitude negated when ``sign_u[k] < 0.5`` (torchvision: sign 0),
    the draws from ``default_rng(1)``."""
    import torch
    from torchvision import transforms

    rng = np.random.default_rng(1)
    policy_u, prob_u, sign_u = rng.random(64), rng.random((64, 2)), rng.random((64, 2))

    def one(k, img):
        auto = transforms.AutoAugment(transforms.AutoAugmentPolicy.CIFAR10)
        count = len(auto.policies)
        policy = min(int(policy_u[k] * count), count - 1)
        probs = torch.tensor(prob_u[k], dtype=torch.float64)  # compared exactly as drawn
        signs = torch.tensor((sign_u[k] >= 0.5).astype(np.int64))
        return _with_params(auto, (policy, probs, signs))(img)

    return _sha(_per_image(cifar, one))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", help="the shared data folder (holds cifar10/)")
    args = parser.parse_args(argv)
    missing = [m for m in ("torch", "torchvision") if importlib.util.find_spec(m) is None]
    if missing:
        print(
            f"error: {' and '.join(missing)} not installed; this script recomputes the "
            "torchvision golden values of tests/test_augment.py and needs both "
            "(pip install torch torchvision, matching versions)",
            file=sys.stderr,
        )
        return 1
    sys.path.insert(0, str(REPO))  # cifar_jax, for the hue test's config and draws
    import torch
    import torchvision

    torch.set_num_threads(1)  # one image at a time: nothing to gain, no ordering noise
    cifar = cifar_images(_data_root(args.data))
    print(f"# torch {torch.__version__}, torchvision {torchvision.__version__}")
    for test, name, value in (
        ("test_rotation_matches_torchvision_on_real_images", "got", rotation_golden(cifar)),
        ("test_color_jitter_matches_torchvision_on_real_images", "got", color_jitter_golden(cifar)),
        ("test_color_jitter_with_hue_from_the_config", "out", hue_golden()),
        ("test_autoaugment_matches_torchvision_on_real_images", "got", autoaugment_golden(cifar)),
    ):
        print(f"# {test}")
        print(f'assert _sha({name}) == "{value}"')
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
