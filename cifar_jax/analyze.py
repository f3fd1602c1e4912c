"""``python -m cifar_jax.analyze``, as documented: a shim;
the command is :mod:`cifar_jax.commands.analyze`."""

from cifar_jax.commands.analyze import *  # noqa: F403 (old imports keep working)
from cifar_jax.commands.analyze import run

if __name__ == "__main__":
    run()
