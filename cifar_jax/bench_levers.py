"""``python -m cifar_jax.bench_levers``, as documented: a shim;
the benchmark is :mod:`cifar_jax.perf.bench_levers`."""

import sys

from cifar_jax.perf.bench_levers import *  # noqa: F403 (old imports keep working)
from cifar_jax.perf.bench_levers import main

if __name__ == "__main__":
    sys.exit(main())
