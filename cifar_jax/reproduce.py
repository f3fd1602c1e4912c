"""``python -m cifar_jax.reproduce``, as documented: a shim;
the command is :mod:`cifar_jax.commands.reproduce`."""

from cifar_jax.commands.reproduce import *  # noqa: F403 (old imports keep working)
from cifar_jax.commands.reproduce import run

if __name__ == "__main__":
    run()
