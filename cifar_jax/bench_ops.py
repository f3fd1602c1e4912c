"""``python -m cifar_jax.bench_ops``, as documented: a shim;
the benchmark is :mod:`cifar_jax.perf.bench_ops`."""

import sys

from cifar_jax.perf.bench_ops import *  # noqa: F403 (old imports keep working)
from cifar_jax.perf.bench_ops import main

if __name__ == "__main__":
    sys.exit(main())
