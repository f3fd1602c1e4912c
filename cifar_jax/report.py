"""``python -m cifar_jax.report``, as documented: a shim;
the command is :mod:`cifar_jax.commands.report`."""

from cifar_jax.commands.report import *  # noqa: F403 (old imports keep working)
from cifar_jax.commands.report import run

if __name__ == "__main__":
    run()
