"""The documented command lines keep working after the re-layout: every
``python -m cifar_jax.<command>`` shim at the package root runs its ``commands/`` or
``perf/`` module, and every console script of pyproject.toml names a function that exists.
Each module is checked in its own interpreter: some commands define their absl flags at
import, so two of them cannot share one process. That interpreter checks both the shim
and the console scripts of its module (one JAX import each, not two)."""

from __future__ import annotations

import concurrent.futures
import json
import subprocess
import sys
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

REPO = Path(__file__).resolve().parents[1]

SHIMS = {  # python -m cifar_jax.<shim> -> (module, entry point)
    **{
        name: (f"cifar_jax.commands.{name}", "run")
        for name in (
            "main evaluate report compare predict summary sweep analyze reproduce export".split()
        )
    },
    **{name: (f"cifar_jax.perf.{name}", "main") for name in ("bench", "bench_ops", "bench_levers")},
}

# Run in each module's interpreter: every check (a shim, a console script) is recorded
# apart, as None (passed) or the error, so each test reports only its own failure.
_CHECKS = """
import importlib, json, sys
checks, failed = json.loads(sys.argv[1]), {}
for name, (kind, target, attr) in checks.items():
    try:
        if kind == "shim":  # the shim runs the moved command's own function
            real = getattr(importlib.import_module(target), attr)
            shim = getattr(importlib.import_module(name.split(":", 1)[1]), attr)
            assert shim is real, "the shim runs another function"
        f = getattr(importlib.import_module(target), attr)
        assert callable(f), f"{f!r} is not callable"
        failed[name] = None
    except Exception as e:
        failed[name] = f"{type(e).__name__}: {e}"
print(json.dumps(failed))
"""


def _scripts() -> dict[str, str]:
    with open(REPO / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["project"]["scripts"]


def _run_checks(checks: dict[str, tuple[str, str, str]]) -> dict[str, str | None]:
    out = subprocess.run(
        [sys.executable, "-c", _CHECKS, json.dumps(checks)],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    if out.returncode != 0 or not out.stdout.strip():
        return {name: f"exit {out.returncode}: {out.stderr[-1500:]}" for name in checks}
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def outcomes() -> dict[str, str | None]:
    """Every shim and console script checked, one interpreter per target module (two at
    a time): ``shim:<name>`` and ``script:<name>`` -> None or what failed."""
    by_module: dict[str, dict[str, tuple[str, str, str]]] = {}
    for shim, (module, entry) in SHIMS.items():
        by_module.setdefault(module, {})[f"shim:cifar_jax.{shim}"] = ("shim", module, entry)
    for name, target in _scripts().items():
        module, _, attr = target.partition(":")
        by_module.setdefault(module, {})[f"script:{name}"] = ("script", module, attr)
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        done = list(pool.map(_run_checks, by_module.values()))
    return {name: error for result in done for name, error in result.items()}


@pytest.mark.parametrize("shim", sorted(SHIMS))
def test_shim_runs_the_moved_command(shim, outcomes):
    error = outcomes[f"shim:cifar_jax.{shim}"]
    assert error is None, error


def test_every_console_script_names_an_existing_function(outcomes):
    scripts = _scripts()
    # One script per documented command (the benchmark included), cifar-jax-<name>.
    assert "cifar-jax-train" in scripts and "cifar-jax-bench" in scripts
    for name, target in scripts.items():
        error = outcomes[f"script:{name}"]
        assert error is None, f"{name} = {target}: {error}"


def test_shim_command_line_runs_end_to_end():
    """``python -m cifar_jax.summary`` through the root shim: the flags parse, the command
    runs and exits 0 (the documented form of every command)."""
    out = subprocess.run(
        [sys.executable, "-m", "cifar_jax.summary", "--config=configs/lenet.py"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "lenet" in out.stdout.lower()
