"""``python -m cifar_jax.export``, as documented: a shim;
the command is :mod:`cifar_jax.commands.export`."""

from cifar_jax.commands.export import *  # noqa: F403 (old imports keep working)
from cifar_jax.commands.export import run

if __name__ == "__main__":
    run()
