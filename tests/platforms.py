"""Which platform the test session runs on: the CPU, unless an accelerator is asked for.

Most of the suite needs the CPU backend as JAX's default: it forces 8 CPU devices with
``XLA_FLAGS=--xla_force_host_platform_device_count=8`` (which only the CPU backend
reads), jits the oneDNN custom call (registered for the CPU only), and counts
``jax.devices()``. On a machine with a GPU, JAX would make the GPU the default and every
such test would fail for a reason that has nothing to do with the code. So
``tests/conftest.py`` sets ``JAX_PLATFORMS`` from :func:`choose` before JAX is imported,
replacing any inherited value, and every subprocess a test starts inherits it.

``CIFAR_JAX_TEST_PLATFORM=cuda`` (or ``gpu``, ``rocm``, ``tpu``) opts in to the
accelerator: the session's default backend is then that accelerator (the CPU stays
available as ``jax.devices("cpu")``), only the tests marked ``accelerator`` run, and the
others are skipped. ``scripts/gpu_check.sh`` does this for its ``tests`` stage.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

OPT_IN = "CIFAR_JAX_TEST_PLATFORM"
MARK = "accelerator"
# What CIFAR_JAX_TEST_PLATFORM accepts -> the JAX platform. "gpu" is not passed to JAX as
# is: in an explicit JAX_PLATFORMS list JAX expands it to cuda, rocm and oneapi and fails
# on the first that has no plugin.
ACCELERATORS = {"gpu": "cuda", "cuda": "cuda", "rocm": "rocm", "tpu": "tpu"}
# jax.default_backend() of each platform: CUDA and ROCm backends call themselves "gpu".
BACKEND_NAMES = {"cpu": "cpu", "cuda": "gpu", "rocm": "gpu", "tpu": "tpu"}


@dataclasses.dataclass(frozen=True)
class Choice:
    """The session's platform: ``platform`` (a JAX platform name), the ``JAX_PLATFORMS``
    value that selects it, and a line for the pytest header saying why."""

    platform: str
    jax_platforms: str
    reason: str

    @property
    def accelerator(self) -> bool:
        return self.platform != "cpu"

    @property
    def backend_name(self) -> str:
        """What ``jax.default_backend()`` returns on this platform."""
        return BACKEND_NAMES[self.platform]


def choose(environ: Mapping[str, str]) -> Choice:
    """The platform for a session started with ``environ``; raises ValueError naming the
    accepted values for an unknown ``CIFAR_JAX_TEST_PLATFORM``."""
    wanted = environ.get(OPT_IN, "").strip().lower()
    inherited = environ.get("JAX_PLATFORMS", "").strip()
    if wanted in ("", "cpu"):
        replaced = f", replacing the inherited JAX_PLATFORMS={inherited}" if inherited else ""
        return Choice(
            "cpu",
            "cpu",
            f"cpu: JAX_PLATFORMS=cpu set by tests/conftest.py{replaced}; "
            f"{OPT_IN}=cuda runs the '{MARK}' tests on a GPU",
        )
    if wanted not in ACCELERATORS:
        raise ValueError(
            f"{OPT_IN}={environ[OPT_IN]!r} is not a platform the suite knows: use cpu (the "
            f"default) or one of {', '.join(sorted(ACCELERATORS))} to run the '{MARK}' "
            "tests on that accelerator."
        )
    platform = ACCELERATORS[wanted]
    return Choice(
        platform,
        f"{platform},cpu",
        f"{platform}: JAX_PLATFORMS={platform},cpu set by tests/conftest.py ({OPT_IN}="
        f"{environ[OPT_IN]}); only the '{MARK}' tests run, the others need the CPU",
    )
