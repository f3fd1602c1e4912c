"""A run's report and model card: ``python -m cifar_jax report --workdir=DIR``.

Flags only; the report, the figures and MODEL_CARD.md are :mod:`cifar_jax.reporting`.
"""

from __future__ import annotations

import os

from cifar_jax import runs
from cifar_jax.reporting import (
    MODEL_CARD,
    write_report,
)


def run() -> None:
    """Command-line entry point (flags defined here, not at import)."""
    from absl import app, flags

    from cifar_jax.commands import cli

    workdir, checkpoint, data_dir = cli.define_run_flags("Checkpoint to report on")
    out = flags.DEFINE_string("out", None, "Output folder (default <workdir>/report).")
    num_examples = flags.DEFINE_integer(
        "num_examples", 18, "Images in each of the well- / misclassified grids."
    )
    seed = flags.DEFINE_integer("seed", 0, "Seed of the misclassified sample.")

    def main(argv: list[str]) -> None:
        if len(argv) > 1:
            raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
        with cli.user_errors():
            loaded = cli.load_workdir_run(workdir.value, checkpoint.value, data_dir.value)
            import jax

            from cifar_jax import evaluation

            runs.write_missing_spec(loaded)

            # Every process takes part in the (sharded) evaluation; process 0 draws.
            predictions = evaluation.predictions(loaded, "test", "none")
            if jax.process_index() == 0:
                path = write_report(loaded, out.value, num_examples.value, seed.value, predictions)
                card = os.path.join(loaded.workdir, MODEL_CARD)
                print(f"Wrote {path} and its figures, and {card}.")

    app.run(main, flags_parser=cli.parse_flags)
