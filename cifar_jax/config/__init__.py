"""A run's configuration: its fields (``fields.py``: :func:`base_config`, every field
with its default and meaning) and config files (``files.py``: :func:`load_config_file`,
as ``--config=`` reads them). This package imports nothing of the package's run code
(tests/test_layout.py); checking a config against the modules that implement its choices
is :mod:`cifar_jax.validation`, which sits above them.
"""

from cifar_jax.config.fields import base_config, default_data_dir, eval_batch_size
from cifar_jax.config.files import load_config_file, resolve_config_path

__all__ = [
    "base_config",
    "default_data_dir",
    "eval_batch_size",
    "load_config_file",
    "resolve_config_path",
]
