"""The documented command lines keep working after the re-layout: every
``python -m cifar_jax.<command>`` shim at the package root runs its ``commands/`` or
``perf/`` module, and every console script of pyproject.toml names a function that exists.
Each check runs in its own interpreter: some commands define their absl flags at import,
so two of them cannot share one process."""

from __future__ import annotations

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


def _scripts() -> dict[str, str]:
    with open(REPO / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["project"]["scripts"]


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300
    )


@pytest.mark.parametrize("shim", sorted(SHIMS))
def test_shim_runs_the_moved_command(shim):
    module, entry = SHIMS[shim]
    out = _run(
        f"import importlib\n"
        f"shim = importlib.import_module('cifar_jax.{shim}')\n"
        f"real = importlib.import_module('{module}')\n"
        f"assert shim.{entry} is real.{entry}, 'the shim runs another function'\n"
        f"assert callable(real.{entry})\n"
    )
    assert out.returncode == 0, out.stderr[-2000:]


def test_every_console_script_names_an_existing_function():
    scripts = _scripts()
    # One script per documented command (the benchmark included), cifar-jax-<name>.
    assert "cifar-jax-train" in scripts and "cifar-jax-bench" in scripts
    for name, target in scripts.items():
        module, _, attr = target.partition(":")
        out = _run(
            f"import importlib\nf = getattr(importlib.import_module('{module}'), '{attr}')\n"
            "assert callable(f)\n"
        )
        assert out.returncode == 0, f"{name} = {target}: {out.stderr[-1500:]}"


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
