"""``python -m cifar_jax.evaluate``, as documented: a shim;
the command is :mod:`cifar_jax.commands.evaluate`."""

from cifar_jax.commands.evaluate import *  # noqa: F403 (old imports keep working)
from cifar_jax.commands.evaluate import run

if __name__ == "__main__":
    run()
