"""``python -m cifar_jax.compare``, as documented: a shim;
the command is :mod:`cifar_jax.commands.compare`."""

from cifar_jax.commands.compare import *  # noqa: F403 (old imports keep working)
from cifar_jax.commands.compare import run

if __name__ == "__main__":
    run()
