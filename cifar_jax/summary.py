"""``python -m cifar_jax.summary``, as documented: a shim;
the command is :mod:`cifar_jax.commands.summary`."""

from cifar_jax.commands.summary import *  # noqa: F403 (old imports keep working)
from cifar_jax.commands.summary import run

if __name__ == "__main__":
    run()
