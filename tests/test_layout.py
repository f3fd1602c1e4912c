"""The package's rooms keep their doors: the architecture (cifar_jax/models/) reaches the
CPU kernels only through ``models/layers.py``, and training code (train.py, steps.py,
models/) and the Python API (runs.py, inference.py) import nothing from the command-line
or benchmark rooms (commands/, perf/)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "cifar_jax"


def imported_modules(source: str, module: str) -> set[str]:
    """Every module ``source`` (the text of module ``module``, dotted) imports, absolute:
    ``import a.b``, ``from a import b`` (both ``a`` and ``a.b``) and relative forms."""
    package = module.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parts = parts[: len(parts) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def _in(name: str, room: str) -> bool:
    return name == room or name.startswith(room + ".")


def violations(files: dict[str, str], rules: list[tuple[str, str]]) -> list[str]:
    """``module imports forbidden`` for each module (name -> source) importing from a room
    its rule forbids; ``rules``: (module prefix the rule applies to, forbidden room)."""
    bad = []
    for module, source in sorted(files.items()):
        for applies_to, forbidden in rules:
            if not _in(module, applies_to):
                continue
            for name in sorted(imported_modules(source, module)):
                if _in(name, forbidden):
                    bad.append(f"{module} imports {name}")
    return bad


def _module_name(path: Path) -> str:
    """Dotted name; a package's ``__init__`` keeps that suffix, so its relative imports
    resolve against the package itself."""
    return ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)


RULES = [
    # The architecture says what the net is; how XLA:CPU computes it is the kernels' job,
    # reached through one door (layers.py: conv, pool, BatchNorm).
    *[
        (f"cifar_jax.models.{p.stem}", "cifar_jax.kernels")
        for p in sorted((PACKAGE / "models").glob("*.py"))
        if p.stem != "layers"
    ],
    ("cifar_jax.models", "cifar_jax.commands"),
    ("cifar_jax.models", "cifar_jax.perf"),
    ("cifar_jax.train", "cifar_jax.commands"),
    ("cifar_jax.train", "cifar_jax.perf"),
    ("cifar_jax.steps", "cifar_jax.commands"),
    ("cifar_jax.steps", "cifar_jax.perf"),
    # The run loader and the exported function are the Python API: no command under them.
    ("cifar_jax.runs", "cifar_jax.commands"),
    ("cifar_jax.inference", "cifar_jax.commands"),
]


def _package_files() -> dict[str, str]:
    return {_module_name(p): p.read_text(encoding="utf-8") for p in PACKAGE.rglob("*.py")}


def test_rules_cover_the_files_they_name():
    files = _package_files()
    assert "cifar_jax.models.layers" in files and "cifar_jax.models.blocks" in files
    assert {"cifar_jax.train", "cifar_jax.steps"} <= set(files)
    assert not any(applies == "cifar_jax.models.layers" for applies, _ in RULES)


def test_the_package_keeps_its_layout():
    bad = violations(_package_files(), RULES)
    assert not bad, (
        "layout broken: " + "; ".join(bad) + ". Fix: models/ reach kernels only through "
        "cifar_jax.models.layers (cifar_jax.kernels' interface); train.py, steps.py and "
        "models/ must not import commands/ or perf/ (move the shared code down a level)."
    )


def test_layers_is_the_models_door_to_the_kernels():
    name = "cifar_jax.models.layers"
    assert "cifar_jax.kernels" in imported_modules(_package_files()[name], name)


@pytest.mark.parametrize(
    "module,source",
    [
        ("cifar_jax.models.blocks", "from cifar_jax.kernels import fast_ops\n"),
        ("cifar_jax.models.resnet", "import cifar_jax.kernels.onednn as o\n"),
        ("cifar_jax.models.convnet", "from cifar_jax import kernels\n"),
        ("cifar_jax.models.convnet", "from ..kernels import levers\n"),
        ("cifar_jax.models.convnet", "def f():\n    from cifar_jax.kernels.fast_ops import x\n"),
        ("cifar_jax.models.registry", "from cifar_jax.perf import bench\n"),
        ("cifar_jax.models.__init__", "from cifar_jax.commands import cli\n"),
        ("cifar_jax.models.__init__", "from ..perf import bench\n"),
        ("cifar_jax.train", "from cifar_jax.perf.bench import JaxSide\n"),
        ("cifar_jax.steps", "from .commands import analyze\n"),
        ("cifar_jax.steps", "from cifar_jax import perf\n"),
        ("cifar_jax.inference", "from cifar_jax.commands.summary import PLATFORMS\n"),
    ],
)
def test_an_added_forbidden_import_is_caught(module, source):
    assert violations({module: source}, RULES) != []


@pytest.mark.parametrize(
    "module,source",
    [
        ("cifar_jax.models.layers", "from cifar_jax import kernels\n"),
        ("cifar_jax.models.blocks", "from cifar_jax.models import layers\n"),
        ("cifar_jax.models.blocks", "from . import layers\n"),
        ("cifar_jax.train", "from cifar_jax import parallel, steps\n"),
        ("cifar_jax.commands.cli", "from cifar_jax.perf import bench\n"),
        ("cifar_jax.steps", "import cifar_jax.kernelsfoo\n"),  # a prefix, not the room
    ],
)
def test_allowed_imports_pass(module, source):
    assert violations({module: source}, RULES) == []


def unwrapped_model_jits(source: str) -> list[str]:
    """Names of functions that call ``<something>.apply(`` (run a model) and are passed
    straight to ``jax.jit`` in ``source``, not through ``traced_on`` (which picks the
    kernels per lowering platform and sets the batch mesh of the oneDNN convs) or, for
    an exported program, ``traced_portable`` (plain XLA ops on every platform)."""
    tree = ast.parse(source)
    applies = {
        node.name
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and any(
            isinstance(call, ast.Call)
            and isinstance(call.func, ast.Attribute)
            and call.func.attr == "apply"
            for call in ast.walk(node)
        )
    }
    bad = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and ast.unparse(node.func) in ("jax.jit", "jit")):
            continue
        if node.args and isinstance(node.args[0], ast.Name) and node.args[0].id in applies:
            bad.append(node.args[0].id)
    return bad


def test_every_jitted_model_step_goes_through_traced_on():
    bad = {
        name: found
        for name, source in _package_files().items()
        if (found := unwrapped_model_jits(source))
    }
    assert not bad, (
        f"jitted model steps without parallel.traced_on: {bad}. Fix: "
        "jax.jit(parallel.traced_on(mesh, step), ...), or parallel.traced_portable(step) "
        "for an exported program"
    )


def test_an_unwrapped_model_jit_is_caught():
    step = "def step(v, x):\n    return model.apply(v, x)\n"
    assert unwrapped_model_jits(step + "f = jax.jit(step)\n") == ["step"]
    assert unwrapped_model_jits(step + "f = jax.jit(parallel.traced_on(mesh, step))\n") == []
    assert unwrapped_model_jits(step + "f = jax.jit(parallel.traced_portable(step))\n") == []
    assert unwrapped_model_jits("def g(x):\n    return x\nf = jax.jit(g)\n") == []
