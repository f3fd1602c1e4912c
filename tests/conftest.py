"""Shared pytest fixtures (keep generic: each test module owns its own helpers)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def real_data_root() -> Path:
    """Real CIFAR data: ``shared/data`` next to the repo (or ``$CIFAR_JAX_SHARED_DATA``),
    else a test-data folder built in ``$CIFAR_JAX_DATA`` / ``~/.cache/cifar_jax`` from the
    official releases found there or downloaded once (see ``tests/real_data.py``).

    Data that can be neither found nor fetched fails the test loudly instead of skipping
    it, so a green run always means the real-data checks ran.
    """
    from real_data import real_data_root as locate

    from cifar_jax.errors import DataError

    try:
        return locate()
    except DataError as e:
        pytest.fail(
            f"real CIFAR data not found and could not be fetched: {e} Clone the repo next to "
            "shared/, set CIFAR_JAX_SHARED_DATA to the shared/data folder, or put the official "
            "binary releases in $CIFAR_JAX_DATA."
        )
