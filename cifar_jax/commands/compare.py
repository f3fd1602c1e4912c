"""Compare runs: ``python -m cifar_jax compare --workdirs=A,B,...``.

Flags only; the table, the confusion matrices and the tests are :mod:`cifar_jax.comparison`.
"""

from __future__ import annotations

from cifar_jax import runs
from cifar_jax.comparison import (
    compare,
)
from cifar_jax.errors import CifarJaxError


def run() -> None:
    """Command-line entry point (flags defined here, not at import)."""
    from absl import app, flags

    from cifar_jax.commands import cli

    out = flags.DEFINE_string("out", "compare", "Output folder for compare.md and figures.")
    names = flags.DEFINE_list("names", None, "Names of the runs (default: folder names).")
    checkpoint = flags.DEFINE_string(
        "checkpoint", "latest", "Checkpoint of every run for the confusion matrices."
    )
    confusion = flags.DEFINE_bool(
        "confusion", True, "Draw test confusion matrices (evaluates runs without saved ones)."
    )
    data_dir = flags.DEFINE_string("data_dir", None, "Replaces every run's data_dir.")

    def main(argv: list[str]) -> None:
        with cli.user_errors():
            workdirs = argv[1:]
            if not workdirs:
                raise CifarJaxError(
                    "no workdirs given: python -m cifar_jax compare RUN1 RUN2 ... [--out=DIR]"
                )
            cli.prepare(runs.read_config(workdirs[0]))  # XLA flags before JAX starts
            table, path = compare(
                workdirs,
                out.value,
                names.value,
                confusion.value,
                runs.parse_checkpoint(checkpoint.value),
                data_dir.value,
            )
            import jax

            if jax.process_index() == 0:
                print(table)
                print(f"Wrote {path} and its figures.")

    app.run(main, flags_parser=cli.parse_flags)
