"""Training: ``python -m cifar_jax.main --config=configs/resnet.py --workdir=runs/resnet``
(also ``python -m cifar_jax train ...`` and ``cifar-jax train ...``: the same program).

Any config field can be overridden with ``--config.<field>=<value>``. Running the same
command again with the same ``--workdir`` resumes from its latest checkpoint.
This module only parses flags; the work is in :mod:`cifar_jax.train`.
"""

from __future__ import annotations

import sys

from absl import app, flags
from ml_collections import config_flags

from cifar_jax.commands import cli

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file, e.g. configs/lenet.py.", lock_config=True
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and results.")


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    with cli.user_errors():
        config = cli.prepare(_CONFIG.value)
        from cifar_jax import train  # imported after the XLA flags are set

        train.train_and_evaluate(config, _WORKDIR.value)


def run() -> None:
    flags.mark_flags_as_required(["config", "workdir"])
    app.run(main, flags_parser=cli.parse_flags)


if __name__ == "__main__":
    run()
    sys.exit(0)
