"""A config's model without data: ``python -m cifar_jax summary --config=configs/<id>.py``.

Flags only; the summary and the lowering are :mod:`cifar_jax.model_summary`.
"""

from __future__ import annotations

import sys

from absl import flags

from cifar_jax.errors import CifarJaxError, ConfigError
from cifar_jax.model_summary import (
    lower_steps,
    lowering_line,
    summarize,
)


def run() -> None:
    """Command-line entry point: define the ``--config`` flag and print the summary.

    The flag is defined here, not at import, so importing this module from tests or
    other tools never registers a global absl flag that could clash with theirs.
    """
    from absl import app
    from ml_collections import config_flags

    config_flag = config_flags.DEFINE_config_file(
        "config", None, "Path to a config file in configs/.", lock_config=True
    )
    lower_for = flags.DEFINE_string(
        "lower_for", "", "Also lower the config's real train step for this platform "
        "(cpu, cuda, rocm, tpu) and print its op count and custom calls."
    )  # fmt: skip
    flags.mark_flag_as_required("config")

    def main(argv: list[str]) -> None:
        try:
            if len(argv) > 1:
                raise ConfigError(
                    f"Unexpected arguments: {' '.join(argv[1:])}. Fix: pass config changes "
                    f"as --config.FIELD=VALUE."
                )
            print(summarize(config_flag.value))
            if lower_for.value:
                module = lower_steps(config_flag.value, lower_for.value)["train"]
                print(lowering_line(module, lower_for.value))
        except CifarJaxError as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(1)

    try:
        app.run(main)
    except OSError as e:  # ml_collections reports an unreadable config file this way
        print(f"error: {e}\nFix: pass --config=configs/<model>.py", file=sys.stderr)
        sys.exit(1)
