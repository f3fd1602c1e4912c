"""The package's rooms keep their doors: the architecture (cifar_jax/models/) reaches the
CPU kernels only through ``models/layers.py``; training code (train.py, steps.py,
models/) and the Python API (runs.py, inference/) import nothing from the command-line
or benchmark rooms (commands/, perf/); commands are leaves: no library module, no config
and no other command imports a command (only the flag plumbing, commands/cli.py, is
shared by the programs); and the dependency between loading a run and using it goes one
way: runs.py imports inference/, whose modules never import runs.py (a loaded run is
passed to them; naming its type under ``if TYPE_CHECKING:`` is not an import at run
time)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "cifar_jax"


def _type_checking_block(node: ast.AST) -> bool:
    """``if TYPE_CHECKING:`` (or ``typing.TYPE_CHECKING``): imports for annotations only."""
    return isinstance(node, ast.If) and ast.unparse(node.test) in (
        "TYPE_CHECKING",
        "typing.TYPE_CHECKING",
    )


def _nodes(tree: ast.AST, runtime_only: bool):
    """``ast.walk(tree)``, without the bodies of ``if TYPE_CHECKING:`` if ``runtime_only``."""
    todo = [tree]
    while todo:
        node = todo.pop()
        yield node
        if runtime_only and _type_checking_block(node):
            todo.extend(node.orelse)
            continue
        todo.extend(ast.iter_child_nodes(node))


def imported_modules(source: str, module: str, runtime_only: bool = False) -> set[str]:
    """Every module ``source`` (the text of module ``module``, dotted) imports, absolute:
    ``import a.b``, ``from a import b`` (both ``a`` and ``a.b``) and relative forms, at
    module level or inside functions; ``runtime_only``: not those under ``if
    TYPE_CHECKING:``, which are never executed."""
    package = module.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in _nodes(ast.parse(source), runtime_only):
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


def violations(
    files: dict[str, str], rules: list[tuple[str, str]], runtime_only: bool = False
) -> list[str]:
    """``module imports forbidden`` for each module (name -> source) importing from a room
    its rule forbids; ``rules``: (module prefix the rule applies to, forbidden room).
    ``runtime_only``: imports under ``if TYPE_CHECKING:`` do not count."""
    bad = []
    for module, source in sorted(files.items()):
        for applies_to, forbidden in rules:
            if not _in(module, applies_to):
                continue
            for name in sorted(imported_modules(source, module, runtime_only)):
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
    # Checkpoint files are checkpoint.py's room (periodic and best); tracking.py keeps the
    # validation bookkeeping (best result, early stopping, plateau) and decides, not saves.
    ("cifar_jax.tracking", "orbax"),
    ("cifar_jax.tracking", "cifar_jax.checkpoint"),
    # Loading a run restores through checkpoint.py's functions, not Orbax of its own.
    ("cifar_jax.runs", "orbax"),
    ("cifar_jax.inference", "orbax"),
]

# One way, no circle: loading a run (runs.py) uses the inference spec, the image checks
# and Predictions; the inference modules take a loaded run as an argument and never import
# the loader, not even inside a function (only its type, for annotations).
RUNTIME_RULES = [("cifar_jax.inference", "cifar_jax.runs")]


def _package_files() -> dict[str, str]:
    return {_module_name(p): p.read_text(encoding="utf-8") for p in PACKAGE.rglob("*.py")}


def test_rules_cover_the_files_they_name():
    files = _package_files()
    assert "cifar_jax.models.layers" in files and "cifar_jax.models.blocks" in files
    assert {"cifar_jax.train", "cifar_jax.steps", "cifar_jax.tracking"} <= set(files)
    assert {"cifar_jax.runs", "cifar_jax.inference.__init__", "cifar_jax.inference.spec"} <= set(
        files
    )
    assert not any(applies == "cifar_jax.models.layers" for applies, _ in RULES)


def test_the_package_keeps_its_layout():
    bad = violations(_package_files(), RULES)
    assert not bad, (
        "layout broken: " + "; ".join(bad) + ". Fix: models/ reach kernels only through "
        "cifar_jax.models.layers (cifar_jax.kernels' interface); train.py, steps.py and "
        "models/ must not import commands/ or perf/ (move the shared code down a level); "
        "Orbax I/O goes in checkpoint.py, not tracking.py, runs.py or inference/."
    )


def test_loading_a_run_and_the_inference_modules_import_one_way():
    files = _package_files()
    bad = violations(files, RUNTIME_RULES, runtime_only=True)
    assert not bad, (
        "import circle: " + "; ".join(bad) + ". Fix: runs.py imports cifar_jax.inference, "
        "not the reverse; pass the loaded run in (name its type under if TYPE_CHECKING:), "
        "and move what both need into cifar_jax/inference/ (as spec.load_data)."
    )
    assert "cifar_jax.inference" in imported_modules(files["cifar_jax.runs"], "cifar_jax.runs")


@pytest.mark.parametrize(
    "module,source",
    [
        ("cifar_jax.inference.export_check", "def f():\n    from cifar_jax import runs\n"),
        ("cifar_jax.inference.exporting", "from cifar_jax.runs import LoadedRun\n"),
        ("cifar_jax.inference.__init__", "from .. import runs\n"),
        ("cifar_jax.inference.spec", "import cifar_jax.runs\n"),
    ],
)
def test_an_inference_module_importing_runs_is_caught(module, source):
    assert violations({module: source}, RUNTIME_RULES, runtime_only=True) != []


def test_a_type_only_import_of_runs_is_no_circle():
    source = (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from cifar_jax.runs import LoadedRun\n"
    )
    module = "cifar_jax.inference.exporting"
    assert violations({module: source}, RUNTIME_RULES, runtime_only=True) == []
    assert violations({module: source}, RUNTIME_RULES) != []  # counted unless runtime_only
    other = source.replace("if TYPE_CHECKING:", "if SOMETHING:")
    assert violations({module: other}, RUNTIME_RULES, runtime_only=True) != []


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
        ("cifar_jax.inference", "from cifar_jax.commands.evaluate import SPLITS\n"),
        ("cifar_jax.tracking", "import orbax.checkpoint as ocp\n"),
        ("cifar_jax.tracking", "from cifar_jax import checkpoint, optim\n"),
        ("cifar_jax.runs", "def load_run():\n    import orbax.checkpoint as ocp\n"),
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


# Who may import from cifar_jax/commands/: the programs themselves (each command, the
# training program cifar_jax/main.py), and only the shared flag plumbing, commands/cli.py.
_PROGRAMS = ("cifar_jax.commands", "cifar_jax.main")
_SHARED = ("cifar_jax.commands", "cifar_jax.commands.cli")


def command_imports(files: dict[str, str]) -> list[str]:
    """``module imports name`` for every import of a command (anything under commands/ but
    cli) and every import of commands/ from outside the programs."""
    bad = []
    for module, source in sorted(files.items()):
        for name in sorted(imported_modules(source, module)):
            if not _in(name, "cifar_jax.commands"):
                continue
            program = any(_in(module, p) for p in _PROGRAMS)
            if not program or name not in _SHARED:
                bad.append(f"{module} imports {name}")
    return bad


def _config_files() -> dict[str, str]:
    configs = PACKAGE.parent / "configs"
    return {
        ".".join(p.relative_to(configs.parent).with_suffix("").parts): p.read_text()
        for p in configs.rglob("*.py")
    }


def test_no_command_is_imported():
    """A command is flags and one library call; what two programs share (the sweep runner,
    evaluation, the model summary) is a library module. Sweep configs import the library."""
    bad = command_imports({**_package_files(), **_config_files()})
    assert not bad, (
        "a command is imported: " + "; ".join(bad) + ". Fix: move what is shared into a "
        "library module (cifar_jax/studies/, cifar_jax/evaluation.py, ...) and import that."
    )


@pytest.mark.parametrize(
    "module,source",
    [
        ("cifar_jax.commands.report", "from cifar_jax.commands import evaluate\n"),
        ("cifar_jax.commands.compare", "def f():\n    from cifar_jax.commands import summary\n"),
        ("cifar_jax.studies.reproduction", "from cifar_jax.commands import cli\n"),
        ("configs.sweeps.losses", "from cifar_jax.commands.sweep import sweep_config\n"),
        ("cifar_jax.evaluation", "import cifar_jax.commands.evaluate\n"),
    ],
)
def test_an_imported_command_is_caught(module, source):
    assert command_imports({module: source}) != []


@pytest.mark.parametrize(
    "module,source",
    [
        ("cifar_jax.commands.sweep", "from cifar_jax.commands import cli\n"),
        ("cifar_jax.main", "from cifar_jax.commands import cli\n"),
        ("cifar_jax.commands.report", "from cifar_jax import evaluation, model_summary\n"),
        ("configs.sweeps.losses", "from cifar_jax.studies.sweep import sweep_config\n"),
    ],
)
def test_shared_plumbing_and_libraries_pass(module, source):
    assert command_imports({module: source}) == []


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


def config_imports(files: dict[str, str]) -> list[str]:
    """Imports of the package's run code from cifar_jax/config/ (it may import itself and
    the errors module only)."""
    bad = []
    for module, source in sorted(files.items()):
        if not _in(module, "cifar_jax.config"):
            continue
        for name in sorted(imported_modules(source, module)):
            allowed = _in(name, "cifar_jax.config") or _in(name, "cifar_jax.errors")
            if name.startswith("cifar_jax") and not allowed:
                bad.append(f"{module} imports {name}")
    return bad


def test_the_config_package_sits_below_the_run_code():
    """Config files and their loading stay free of jax and of the modules that use the
    fields (bug caught: the old config module imported optim, losses, models, steps, tta
    to validate); checking against those modules is cifar_jax/validation.py, above them."""
    files = _package_files()
    assert "cifar_jax.config.fields" in files
    assert config_imports(files) == []


@pytest.mark.parametrize(
    "source",
    [
        "from cifar_jax import optim\n",
        "def f():\n    from cifar_jax import models\n",
        "import cifar_jax.validation\n",
        "from cifar_jax.data import sources\n",
    ],
)
def test_a_config_import_of_run_code_is_caught(source):
    assert config_imports({"cifar_jax.config.fields": source}) != []
    assert config_imports({"cifar_jax.config.files": "from cifar_jax.errors import X\n"}) == []
