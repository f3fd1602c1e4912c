"""Optimization analyses: ``python -m cifar_jax analyze landscape|batchnorm ...``.

Flags only; the loss landscape and the BatchNorm study are :mod:`cifar_jax.studies.analysis`,
which documents both.
"""

from __future__ import annotations

import os

from cifar_jax.errors import CifarJaxError, ConfigError
from cifar_jax.studies.analysis import (
    DEFAULT_LRS,
    bn_sweep,
    landscape,
    load_sweeps,
    plot_landscape,
    plot_sweeps,
    save_landscape,
    save_sweep,
)

# ------------------------------------------------------------------ command line


def run() -> None:
    """Command-line entry point (flags defined here, not at import)."""
    from absl import app, flags
    from ml_collections import config_flags

    from cifar_jax import validation
    from cifar_jax.commands import cli

    # landscape
    workdir = flags.DEFINE_string("workdir", None, "landscape: workdir of a training run.")
    checkpoint = flags.DEFINE_string("checkpoint", "latest", "landscape: latest, best or a step.")
    num_images = flags.DEFINE_integer("num_images", 500, "landscape: images in the subset.")
    split = flags.DEFINE_enum("split", "test", ["test", "val"], "landscape: split of the subset.")
    points_1d = flags.DEFINE_integer("points_1d", 41, "landscape: points along d1.")
    points_2d = flags.DEFINE_integer("points_2d", 21, "landscape: points per side of the grid.")
    span = flags.DEFINE_float("span", 1.0, "landscape: coefficients range over [-span, span].")
    seed = flags.DEFINE_integer("seed", 0, "landscape: seed of the directions and the subset.")
    data_dir = flags.DEFINE_string("data_dir", None, "landscape: replaces the run's data_dir.")
    # batchnorm
    config_flag = config_flags.DEFINE_config_file(
        "config", None, "batchnorm: config to study (e.g. configs/vgg_a_bn.py).", lock_config=True
    )
    compare_flag = config_flags.DEFINE_config_file(
        "compare_config", None, "batchnorm: a second config (e.g. configs/vgg_a.py).",
        lock_config=True,
    )  # fmt: skip
    lrs = flags.DEFINE_list(
        "lrs", [f"{x:g}" for x in DEFAULT_LRS], "batchnorm: peak learning rates to train with."
    )
    steps = flags.DEFINE_integer("steps", 0, "batchnorm: steps per learning rate (0 = config's).")
    plot_only = flags.DEFINE_bool("plot", False, "batchnorm: only redraw from --out's data.")
    smooth = flags.DEFINE_integer(
        "smooth", 0, "batchnorm: moving-average window of the plotted curves (0 = auto)."
    )
    # both
    out = flags.DEFINE_string(
        "out", None, "Output folder (landscape: <workdir>/analysis/landscape; batchnorm: "
        "./analysis/batchnorm).",
    )  # fmt: skip

    def main(argv: list[str]) -> None:
        with cli.user_errors():
            if len(argv) != 2 or argv[1] not in ("landscape", "batchnorm"):
                raise CifarJaxError(
                    "give one analysis: python -m cifar_jax analyze landscape --workdir=DIR, or "
                    "python -m cifar_jax analyze batchnorm --config=configs/vgg_a_bn.py "
                    "--compare_config=configs/vgg_a.py"
                )
            if argv[1] == "landscape":
                if not workdir.value:
                    raise CifarJaxError("landscape needs --workdir=DIR (a training run).")
                loaded = cli.load_workdir_run(workdir.value, checkpoint.value, data_dir.value)
                result = landscape(
                    loaded, num_images.value, split.value, points_1d.value, points_2d.value,
                    span.value, seed.value,
                )  # fmt: skip
                out_dir = out.value or os.path.join(loaded.workdir, "analysis", "landscape")
                import jax

                if jax.process_index() == 0:
                    files = save_landscape(result, out_dir) + plot_landscape(result, out_dir)
                    print("Wrote " + ", ".join(files))
                return
            out_dir = os.path.abspath(out.value or os.path.join("analysis", "batchnorm"))
            if not plot_only.value:
                configs = [c for c in (config_flag.value, compare_flag.value) if c is not None]
                if not configs:
                    raise CifarJaxError(
                        "batchnorm needs --config=configs/vgg_a_bn.py (and optionally "
                        "--compare_config=configs/vgg_a.py), or --plot to redraw saved data."
                    )
                rates = []
                for x in lrs.value:
                    try:
                        rates.append(float(x))
                    except ValueError as e:
                        raise ConfigError(f"--lrs: {x!r} is not a number.") from e
                cli.prepare(configs[0])  # also sets up JAX; the other config is only checked
                for c in configs[1:]:
                    validation.validate_config(c)
                results = []
                for c in configs:
                    print(
                        f"{c.model}: {len(rates)} learning rates x {steps.value or 'config'} steps"
                    )
                    results.append(bn_sweep(c, rates, steps.value))
                import jax

                if jax.process_index() != 0:
                    return
                for result in results:
                    print(f"Wrote {save_sweep(result, out_dir)}")
            print(f"Wrote {plot_sweeps(load_sweeps(out_dir), out_dir, smooth.value)}")

    app.run(main, flags_parser=cli.parse_flags)
