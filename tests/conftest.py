"""Shared pytest set-up (keep generic: each test module owns its own helpers).

The session's platform is chosen here, before any test module imports JAX: the CPU,
also on a machine with a GPU, unless ``CIFAR_JAX_TEST_PLATFORM`` asks for an accelerator
(``tests/platforms.py`` says why and how).
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import platforms
import pytest

try:
    CHOICE: platforms.Choice | None = platforms.choose(os.environ)
    CHOICE_ERROR = ""
except ValueError as e:
    CHOICE, CHOICE_ERROR = None, str(e)

if CHOICE is not None:
    # Replaces any inherited value (a GPU host's JAX_PLATFORMS=cuda): JAX reads it when it
    # is imported, and every subprocess a test starts inherits it from os.environ.
    os.environ["JAX_PLATFORMS"] = CHOICE.jax_platforms
    if "jax" in sys.modules:  # imported before this file (by a plugin): tell its config too
        from cifar_jax import runtime

        if not runtime.backend_started():
            sys.modules["jax"].config.update("jax_platforms", CHOICE.jax_platforms)

# One XLA compilation cache for the session and every subprocess it starts (they inherit
# os.environ): many tests train the same tiny models in fresh interpreters, and on 2 cores
# most of such a run is compiling. The folder is new per session, so every program is
# still compiled at least once per run; CIFAR_JAX_TEST_COMPILE_CACHE=0 turns it off. CPU
# sessions only: XLA:CPU compiles a program to the same code every time, while a GPU
# compile autotunes, and two runs sharing one executable could hide that they differ.
COMPILE_CACHE = ""
if (
    CHOICE is not None
    and not CHOICE.accelerator
    and os.environ.get("CIFAR_JAX_TEST_COMPILE_CACHE", "1") != "0"
):
    if not os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        COMPILE_CACHE = tempfile.mkdtemp(prefix="cifar_jax_test_xla_cache_")
        os.environ["JAX_COMPILATION_CACHE_DIR"] = COMPILE_CACHE
    # Every program: the tiny test models compile in well under JAX's 1 s threshold.
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    if "jax" in sys.modules:  # imported before this file (by a plugin): tell its config too
        sys.modules["jax"].config.update(
            "jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"]
        )
        sys.modules["jax"].config.update(
            "jax_persistent_cache_min_compile_time_secs",
            float(os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"]),
        )


def pytest_configure(config: pytest.Config) -> None:
    if CHOICE is None:
        raise pytest.UsageError(CHOICE_ERROR)
    if not CHOICE.accelerator and "jax" not in sys.modules:
        return  # JAX will start on the CPU: nothing can have chosen otherwise
    import jax

    backend = jax.default_backend()
    if backend == CHOICE.backend_name:
        return
    if CHOICE.accelerator:
        raise pytest.UsageError(
            f"{platforms.OPT_IN}={os.environ[platforms.OPT_IN]} asks for {CHOICE.platform}, "
            f"but with JAX_PLATFORMS={CHOICE.jax_platforms} JAX's default backend is "
            f"{backend} (JAX skips CUDA where no NVIDIA GPU is visible). Install the "
            f"{CHOICE.platform} plugin on a machine that has the device, or unset "
            f"{platforms.OPT_IN} to run the suite on the CPU."
        )
    raise pytest.UsageError(
        f"the suite needs the CPU backend, but JAX started on {backend} before "
        "tests/conftest.py could choose the platform (a pytest plugin imported it). Run "
        "pytest with JAX_PLATFORMS=cpu, or disable that plugin (-p no:NAME)."
    )


def pytest_unconfigure(config: pytest.Config) -> None:
    if COMPILE_CACHE:
        shutil.rmtree(COMPILE_CACHE, ignore_errors=True)


def pytest_report_header(config: pytest.Config) -> str:
    cache = os.environ.get("JAX_COMPILATION_CACHE_DIR", "off")
    return [
        f"test platform: {CHOICE.reason if CHOICE else CHOICE_ERROR}",
        f"XLA compilation cache: {cache}",
    ]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """On an accelerator, the tests not marked for it are skipped: they need the CPU."""
    if CHOICE is None or not CHOICE.accelerator:
        return
    skip = pytest.mark.skip(
        reason=f"needs the CPU platform; this session runs on {CHOICE.platform} "
        f"({platforms.OPT_IN}): run it without {platforms.OPT_IN}"
    )
    for item in items:
        if item.get_closest_marker(platforms.MARK) is None:
            item.add_marker(skip)


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


REQUIRE_TORCH = "CIFAR_JAX_REQUIRE_TORCH"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """With ``CIFAR_JAX_REQUIRE_TORCH=1`` (.ci/run sets it) a test skipped because torch is
    missing fails instead: the PyTorch reference tests must run on every submission."""
    outcome = yield
    report = outcome.get_result()
    if os.environ.get(REQUIRE_TORCH) != "1" or not report.skipped:
        return
    reason = str(report.longrepr[-1]) if isinstance(report.longrepr, tuple) else ""
    if "torch" in reason:
        report.outcome = "failed"
        report.longrepr = f"{REQUIRE_TORCH}=1, but this test was skipped: {reason}"
