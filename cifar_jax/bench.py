"""``python -m cifar_jax.bench``, as documented: a shim;
the benchmark is :mod:`cifar_jax.perf.bench`."""

import sys

from cifar_jax.perf.bench import *  # noqa: F403 (old imports keep working)
from cifar_jax.perf.bench import main

if __name__ == "__main__":
    sys.exit(main())
