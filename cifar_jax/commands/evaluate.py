"""Evaluate a trained run: ``python -m cifar_jax evaluate --workdir=DIR [--checkpoint=...]``.

Flags only; the metrics, the prediction cache and the files written are
:mod:`cifar_jax.evaluation`.
"""

from __future__ import annotations

from cifar_jax import runs, tta
from cifar_jax.evaluation import (
    SPLITS,
    evaluate_run,
    format_summary,
    metrics_path,
    write_json,
)


def run() -> None:
    """Command-line entry point (flags defined here, not at import)."""
    from absl import app, flags

    from cifar_jax.commands import cli

    workdir, checkpoint, data_dir = cli.define_run_flags("Checkpoint to evaluate")
    tta_mode = flags.DEFINE_enum(
        "tta", "none", list(tta.TTA_MODES), "Test-time augmentation to add."
    )
    split = flags.DEFINE_enum("split", "test", list(SPLITS), "Split to evaluate.")

    def main(argv: list[str]) -> None:
        if len(argv) > 1:
            raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
        with cli.user_errors():
            run_ = cli.load_workdir_run(workdir.value, checkpoint.value, data_dir.value)
            runs.write_missing_spec(run_)  # a run made before inference.json: now it has one
            result = evaluate_run(run_, tta_mode.value, split.value)
            import jax

            if jax.process_index() == 0:
                path = metrics_path(run_.workdir, split.value)
                write_json(path, result)
                print(format_summary(result))
                print(f"Wrote {path}")

    app.run(main, flags_parser=cli.parse_flags)
