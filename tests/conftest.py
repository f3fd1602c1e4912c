"""Shared pytest fixtures (keep generic: each test module owns its own helpers)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def real_data_root() -> Path:
    """The shared real CIFAR data (``shared/data`` next to the repo, see its README).

    Falls back to ``$CIFAR_JAX_SHARED_DATA``. Missing data fails the test loudly instead of
    skipping it, so a green run always means the real-data checks ran.
    """
    candidates = [Path(__file__).resolve().parents[2] / "shared" / "data"]
    if os.environ.get("CIFAR_JAX_SHARED_DATA"):
        candidates.append(Path(os.environ["CIFAR_JAX_SHARED_DATA"]))
    for root in candidates:
        if root.is_dir():
            return root
    pytest.fail(
        f"real CIFAR data not found (looked at {', '.join(map(str, candidates))}); clone the "
        "repo next to shared/ or set CIFAR_JAX_SHARED_DATA to the shared/data folder"
    )
