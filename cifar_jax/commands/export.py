"""Export a trained run's model as one file other programs run: StableHLO or ONNX.

    python -m cifar_jax export --workdir=runs/lenet --format=stablehlo --out=lenet.jax
        [--platforms=cpu,cuda] [--checkpoint=latest|best|STEP] [--nocheck]
    python -m cifar_jax export --workdir=runs/lenet --format=onnx --out=lenet.onnx

Both files hold the same function: uint8 RGB images ``(N, 32, 32, 3)`` in, float32
softmax probabilities ``(N, num_classes)`` out, the run's normalization inside, any
batch size (:mod:`cifar_jax.inference`). ``stablehlo`` is a ``jax.export``
serialization for ``--platforms`` that ``jax.export.deserialize`` loads without
cifar_jax; ``onnx`` is converted by jax2onnx (``pip install -e '.[export]'``) for
onnxruntime or any ONNX runtime. Beside the file, ``<out>.json`` names the class names,
the input and output, the checkpoint and its ``state_sha256``, and the check below.

Unless ``--nocheck``, the file is written under a temporary name beside ``--out``, run
here on real CIFAR images and compared with the package's own predictions
(``run.predict``); only a file that passes is moved to ``--out`` (with ``<out>.json``). A
failed check is an error that leaves nothing new at ``--out``: a file already there stays
as it was. The images: the first 256 of the run's test split when its data set can be read
here (the run's ``data_dir``, or ``--data_dir``; never downloaded), otherwise the 30 real
CIFAR-10 test images shipped in the package (the first 3 of each class of the official
``test_batch.bin``). The check compares log-probabilities, per image relative to the
image's range of log-probabilities (its logits' spread), so a saturated softmax cannot
hide a logit error; over 1e-4 (5e-2 for bfloat16 runs) is an error. The printed line says
which images, how many, and the largest relative difference. ``--nocheck``, and a
``stablehlo`` file for platforms this machine does not run, write the file directly
(atomically) without the check.
"""

from __future__ import annotations

from cifar_jax import inference
from cifar_jax.errors import CifarJaxError


def run() -> None:
    """Command-line entry point (flags defined here, not at import)."""
    from absl import app, flags

    from cifar_jax.commands import cli

    workdir, checkpoint, data_dir = cli.define_run_flags("Checkpoint to export")
    fmt = flags.DEFINE_string("format", None, f"One of {', '.join(inference.FORMATS)}.")
    out = flags.DEFINE_string("out", None, "The file to write (and <out>.json beside it).")
    platforms = flags.DEFINE_list(
        "platforms", list(inference.PLATFORMS), "stablehlo: the platforms the file runs on."
    )
    check = flags.DEFINE_bool(
        "check",
        True,
        "Run the file on real CIFAR images against the package before writing it to --out.",
    )
    flags.mark_flags_as_required(["format", "out"])

    def main(argv: list[str]) -> None:
        if len(argv) > 1:
            raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
        with cli.user_errors():
            inference.check_format(fmt.value)  # before loading the run
            loaded = cli.load_workdir_run(workdir.value, checkpoint.value, data_dir.value)
            import jax

            if jax.process_count() > 1:
                raise CifarJaxError(
                    "export runs in one process (the file is written once, for any number "
                    "of devices): run python -m cifar_jax export without launch.sh."
                )
            here = jax.export.default_export_platform()  # "cuda" on NVIDIA GPUs, not "gpu"
            elsewhere = fmt.value == "stablehlo" and here not in platforms.value
            result = None
            if check.value and not elsewhere:
                images = inference.check_images(loaded)
                path, facts, result = inference.export_checked(
                    loaded, fmt.value, out.value, images, platforms.value
                )
            else:
                path, facts = inference.export(loaded, fmt.value, out.value, platforms.value)
            print(
                f"Wrote {path} ({fmt.value}; {loaded.config.model}, checkpoint "
                f"{loaded.checkpoint}, step {loaded.step}) and {facts}."
            )
            if result is not None:
                print(f"Checked: {result}.")
            elif check.value:
                print(f"Not checked: the file is for {platforms.value}, this machine runs {here}.")

    app.run(main, flags_parser=cli.parse_flags)
