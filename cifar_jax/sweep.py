"""``python -m cifar_jax.sweep``, as documented: a shim;
the command is :mod:`cifar_jax.commands.sweep`."""

from cifar_jax.commands.sweep import *  # noqa: F403 (old imports keep working)
from cifar_jax.commands.sweep import run

if __name__ == "__main__":
    run()
