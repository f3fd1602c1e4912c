"""``python -m cifar_jax.main``, as documented: a shim;
the command is :mod:`cifar_jax.commands.main`."""

from cifar_jax.commands.main import *  # noqa: F403 (old imports keep working)
from cifar_jax.commands.main import run

if __name__ == "__main__":
    run()
