"""Tiny trained runs shared by the evaluation / report / predict / analyze tests.

Each run is trained once per test session (synthetic data, a few steps) and cached here,
at module level, so every test module that asks for it gets the same workdir.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from cifar_jax import config_base, train

REPO = Path(__file__).resolve().parents[1]
_CACHE: dict[str, Path] = {}


def tiny_eval_config(**overrides):
    """LeNet on 256 synthetic images for 2 epochs, with a validation split and flip TTA."""
    config = config_base.base_config()
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


def run_command(
    module: str, *args: str, env: dict[str, str] | None = None, timeout: int = 300
) -> subprocess.CompletedProcess:
    """``python -m cifar_jax.<module> args...`` in a subprocess, output captured."""
    env = {**os.environ, **(env or {})}  # JAX_PLATFORMS=cpu from tests/conftest.py
    return subprocess.run(
        [sys.executable, "-m", f"cifar_jax.{module}", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=str(REPO),
    )
