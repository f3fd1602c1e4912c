"""Tiny trained runs shared by the evaluation / report / predict / analyze tests.

Each run is trained once per test session (synthetic data, a few steps) and cached here,
at module level, so every test module that asks for it gets the same workdir.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from cifar_jax import config as config_lib
from cifar_jax import train

REPO = Path(__file__).resolve().parents[1]
_CACHE: dict[str, Path] = {}


def tiny_eval_config(**overrides):
    """LeNet on 256 synthetic images for 2 epochs, with a validation split and flip TTA."""
    config = config_lib.base_config()
    config.update(
        dict(
            data_source="synthetic",
            synthetic_train_examples=256,
            synthetic_test_examples=100,  # not a multiple of the eval batch: padding
            val_examples=64,
            model="lenet",
            optimizer="adam",
            learning_rate=3e-3,
            batch_size=32,
            num_epochs=2,
            log_every_steps=2,
            random_crop_padding=2,
            tta="flip",
        )
    )
    config.update(overrides)
    return config


def trained(tmp_path_factory, name: str = "lenet") -> Path:
    """The workdir of a finished tiny run ("lenet", or "bn": a small CNN with BatchNorm)."""
    if name not in _CACHE:
        workdir = tmp_path_factory.mktemp(f"run_{name}")
        if name == "lenet":
            config = tiny_eval_config()
        elif name == "bn":
            config = tiny_eval_config(
                model="c100_bn", widths=(8, 16), head_widths=(16,), num_epochs=1, tta="none"
            )
        else:
            raise ValueError(name)
        train.train_and_evaluate(config, str(workdir))
        _CACHE[name] = workdir
    return _CACHE[name]


# Tiny runs on real CIFAR-10 (the export and Python API tests): one with BatchNorm, one
# with dropout (conv and fc) and no BatchNorm.
REAL_RUNS = {
    "real_bn": dict(model="c100_bn", widths=(8, 16), head_widths=(16,)),
    "real_dropout": dict(
        model="cnn_bn_dropout", widths=(8, 8, 16), head_widths=(16,), batch_norm=False,
        conv_dropout_rate=0.3, dropout_rate=0.5,
    ),
}  # fmt: skip


def link_cifar10(real_data_root: Path, folder: Path) -> Path:
    """``folder`` holding ``cifar-10-batches-bin`` with links to one training batch, the
    test batch and the class names of the real CIFAR-10 (``allow_partial_train_files``):
    a data dir a test can delete without touching the real data."""
    source = real_data_root / "cifar10" / "cifar-10-batches-bin"
    target = folder / "cifar-10-batches-bin"
    target.mkdir(parents=True)
    for name in ("data_batch_1.bin", "test_batch.bin", "batches.meta.txt"):
        (target / name).symlink_to(source / name)
    return folder


def real_config(data_dir: Path, **overrides):
    """16 steps of a tiny model on 512 real CIFAR-10 training images (64 held out)."""
    config = config_lib.base_config()
    config.update(
        dict(
            data_source="files",
            data_dir=str(data_dir),
            allow_partial_train_files=True,
            max_train_examples=512,
            val_examples=64,
            batch_size=32,
            eval_batch_size=500,
            num_train_steps=16,  # past the first epoch (14 steps): a best checkpoint too
            checkpoint_every_steps=8,
            log_every_steps=8,
            optimizer="adam",
            learning_rate=3e-3,
        )
    )
    config.update(overrides)
    return config


def trained_real(tmp_path_factory, real_data_root: Path, name: str) -> Path:
    """The workdir of a finished tiny run on real CIFAR-10 (a name of ``REAL_RUNS``); its
    data dir is ``<workdir>/../data`` (links, see :func:`link_cifar10`)."""
    if name not in _CACHE:
        root = tmp_path_factory.mktemp(name)
        data_dir = link_cifar10(real_data_root, root / "data")
        workdir = root / "run"
        train.train_and_evaluate(real_config(data_dir, **REAL_RUNS[name]), str(workdir))
        _CACHE[name] = workdir
    return _CACHE[name]


def run_command(
    module: str, *args: str, env: dict[str, str] | None = None, timeout: int = 300
) -> subprocess.CompletedProcess:
    """``python -m cifar_jax <command> args...`` in a subprocess, output captured
    (``main``: ``python -m cifar_jax.main``, the design card's training entry)."""
    env = {**os.environ, **(env or {})}  # JAX_PLATFORMS=cpu from tests/conftest.py
    return subprocess.run(
        [
            sys.executable,
            "-m",
            *(["cifar_jax.main"] if module == "main" else ["cifar_jax", module]),
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=str(REPO),
    )
