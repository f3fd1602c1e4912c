"""Config files: where a ``--config=`` path points, and the config it returns."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import ml_collections

from cifar_jax.errors import ConfigError


def resolve_config_path(path: str) -> str:
    """A config file path as the command line reads it: absolute, or relative to the current
    directory; failing that, relative to the checkout this code runs from (so
    ``configs/lenet.py`` works from any directory of an editable install)."""
    if os.path.isabs(path) or os.path.exists(path):
        return path
    return str(Path(__file__).resolve().parents[2] / path)


def load_config_file(path: str) -> ml_collections.ConfigDict:
    """Runs ``get_config()`` of a config file (as ``--config=`` does)."""
    full = resolve_config_path(path)
    if not os.path.exists(full):
        raise ConfigError(f"config file {path!r} does not exist (looked at {full}).")
    spec = importlib.util.spec_from_file_location(f"_cifar_jax_cfg_{abs(hash(full))}", full)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()
