"""One door to every program: ``python -m cifar_jax <command> [flags]``.

The same as the ``cifar-jax <command>`` console script that ``pip install`` puts on the
PATH. With no command (or ``help``) it lists the commands, one line each; ``python -m
cifar_jax <command> --help`` gives a command's flags. Training also keeps the design
card's entry, ``python -m cifar_jax.main --config=... --workdir=...`` (the same program).

This module only picks the command; each command parses its own flags and calls the
library.
"""

from __future__ import annotations

import importlib
import sys

# command -> (the module whose run() is the program, what it does)
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("cifar_jax.main", "train a config into a workdir (resumes a workdir's run)"),
    "evaluate": ("cifar_jax.commands.evaluate", "every metric of a trained run on its test split"),
    "report": ("cifar_jax.commands.report", "a run's report and model card (MODEL_CARD.md)"),
    "compare": ("cifar_jax.commands.compare", "several runs side by side, with significance"),
    "predict": ("cifar_jax.commands.predict", "classify image files with a trained run"),
    "export": ("cifar_jax.commands.export", "a trained run as StableHLO or ONNX, checked"),
    "summary": ("cifar_jax.commands.summary", "a config's model, parameters and step, no data"),
    "sweep": ("cifar_jax.commands.sweep", "train a sweep config's variants x seeds, tabled"),
    "analyze": ("cifar_jax.commands.analyze", "loss landscape and BatchNorm studies of runs"),
    "reproduce": ("cifar_jax.commands.reproduce", "the seed reports' results, run and tabled"),
    "bench": ("cifar_jax.perf.bench", "train/eval steps timed against PyTorch twins"),
    "bench_ops": ("cifar_jax.perf.bench_ops", "per-op profiles of a step, beside PyTorch's"),
    "bench_levers": ("cifar_jax.perf.bench_levers", "each CPU kernel switched off in turn"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [
        "usage: python -m cifar_jax <command> [flags]   (or: cifar-jax <command> [flags])",
        "",
        "commands:",
        *(f"  {name:<{width}}  {what}" for name, (_, what) in COMMANDS.items()),
        "",
        "python -m cifar_jax <command> --help lists a command's flags.",
    ]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    """Runs ``argv[1]`` with the flags after it; returns the exit status."""
    if len(argv) < 2 or argv[1] in ("help", "-h", "--help", "--helpshort", "--helpfull"):
        print(usage())
        return 0
    name = argv[1]
    if name not in COMMANDS:
        print(f"error: unknown command {name!r}.\n\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    # The command sees itself as the program: its flags, its --help, its error messages.
    sys.argv = [f"cifar-jax {name}", *argv[2:]]
    module.run()
    return 0


def run() -> None:
    """The ``cifar-jax`` console script."""
    sys.exit(main(sys.argv))


if __name__ == "__main__":
    run()
