"""One door per program: ``python -m cifar_jax <command>`` (cifar_jax/__main__.py) and the
one console script ``cifar-jax <command>`` run every program; ``python -m cifar_jax.main``
stays as the design card's training entry; no other module is a second door (no
``import *`` shims at the package root, no ``__main__`` blocks in commands/ or perf/), and
no documented command line names a door that is gone. Each command module is imported in
its own interpreter: some define their absl flags at import, so two cannot share one
process."""

from __future__ import annotations

import concurrent.futures
import re
import subprocess
import sys
from pathlib import Path

import pytest

from cifar_jax.__main__ import COMMANDS

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

REPO = Path(__file__).resolve().parents[1]

# Every program the README and docs name; the door must list each one.
DOCUMENTED = (
    "train evaluate report compare predict export summary sweep analyze reproduce "
    "bench bench_ops bench_levers"
).split()

_CHECK = """
import importlib, sys
f = getattr(importlib.import_module(sys.argv[1]), "run")
assert callable(f), f"{f!r} is not callable"
"""


def _import_run(module: str) -> str | None:
    out = subprocess.run(
        [sys.executable, "-c", _CHECK, module],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    return None if out.returncode == 0 else f"exit {out.returncode}: {out.stderr[-1500:]}"


@pytest.fixture(scope="module")
def imported() -> dict[str, str | None]:
    """Each command's module imported in its own interpreter (two at a time): its run()
    exists -> None, else the error."""
    modules = sorted({module for module, _ in COMMANDS.values()})
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        return dict(zip(modules, pool.map(_import_run, modules), strict=True))


def test_the_door_lists_every_documented_program():
    assert sorted(COMMANDS) == sorted(DOCUMENTED)
    out = subprocess.run(
        [sys.executable, "-m", "cifar_jax"], cwd=REPO, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    listed = re.findall(r"^  (\w+)  +\S", out.stdout, flags=re.M)
    assert listed == list(COMMANDS), out.stdout


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_module_has_its_run(command, imported):
    error = imported[COMMANDS[command][0]]
    assert error is None, error


def test_training_is_cifar_jax_main_itself():
    """``python -m cifar_jax.main`` (the design card) and ``cifar-jax train`` are one
    program, and cifar_jax/main.py holds it (a newcomer who opens it finds the command)."""
    assert COMMANDS["train"][0] == "cifar_jax.main"
    text = (REPO / "cifar_jax" / "main.py").read_text()
    assert "def main(" in text and "train_and_evaluate" in text and "import *" not in text


def test_one_console_script_runs_the_door():
    with open(REPO / "pyproject.toml", "rb") as f:
        scripts = tomllib.load(f)["project"]["scripts"]
    assert scripts == {"cifar-jax": "cifar_jax.__main__:run"}


def test_no_second_door():
    """No shim module at the package root, no ``python -m`` entry inside commands/ or
    perf/: every program has the one door."""
    package = REPO / "cifar_jax"
    shims = [p.name for p in package.glob("*.py") if "import *" in p.read_text()]
    assert shims == []
    mains = [
        str(p.relative_to(REPO))
        for folder in ("commands", "perf")
        for p in (package / folder).glob("*.py")
        if '__name__ == "__main__"' in p.read_text()
    ]
    assert mains == []


def test_an_unknown_command_is_named_with_the_list():
    out = subprocess.run(
        [sys.executable, "-m", "cifar_jax", "evalute"], cwd=REPO, capture_output=True,
        text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 2
    assert "unknown command 'evalute'" in out.stderr and "evaluate" in out.stderr


# A module door other than the training entry (cifar_jax.main), in any of the three forms
# a command line takes here: python -m X, "$py" -m X, [..., "-m", "X"] (see _GONE's test).
_GONE = re.compile(r"-m\"?,? \"?cifar_jax\.(?!main\b)\w")


def test_no_documented_command_line_names_a_gone_door():
    """README, docs, scripts, launch.sh, the package and the tests say ``python -m cifar_jax
    <command>``. Not checked: the dated notes, the records, and the tables rendered from
    records (between render markers), which quote the command a record was made with."""
    paths = [REPO / "README.md", REPO / "launch.sh", REPO / ".ci" / "run"]
    paths += [*(REPO / "docs").glob("*.md")]
    for folder in ("scripts", "cifar_jax", "tests", "configs"):
        paths += [p for p in (REPO / folder).rglob("*") if p.suffix in (".py", ".sh", ".md")]
    found = []
    for p in paths:
        if p.name in ("compiled_step_hash.py", "test_commands.py"):  # old checkouts; this file
            continue
        rendered = False
        for n, line in enumerate(p.read_text().splitlines(), 1):
            if line.startswith("<!-- render:") or line.startswith("<!-- /render:"):
                rendered = line.startswith("<!-- render:")
            elif not rendered and _GONE.search(line):
                found.append(f"{p.relative_to(REPO)}:{n}: {line.strip()}")
    assert found == []


def test_the_door_runs_a_command_end_to_end():
    """``python -m cifar_jax summary`` through the door: the flags parse, the command
    runs and exits 0 (the documented form of every command)."""
    out = subprocess.run(
        [sys.executable, "-m", "cifar_jax", "summary", "--config=configs/lenet.py"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "lenet" in out.stdout.lower()


@pytest.mark.parametrize(
    "line,gone",
    [
        ("python -m cifar_jax.evaluate --workdir=W", True),
        ('"$py" -m cifar_jax.bench --models=lenet', True),
        ('cmd = [sys.executable, "-m", "cifar_jax.sweep", *args]', True),
        ("python -m cifar_jax.main --config=configs/lenet.py", False),
        ('[sys.executable, "-m", "cifar_jax", "bench", "--worker"]', False),
        ('"$py" -m cifar_jax evaluate --workdir=run', False),
    ],
)
def test_the_gone_door_pattern_reads_every_form(line, gone):
    """The scan above missed ``"$py" -m cifar_jax.evaluate`` in the plain-install check
    once (CI would have failed there): every form a command line takes here is read."""
    assert bool(_GONE.search(line)) is gone
