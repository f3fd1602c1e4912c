"""``python -m cifar_jax.predict``, as documented: a shim;
the command is :mod:`cifar_jax.commands.predict`."""

from cifar_jax.commands.predict import *  # noqa: F403 (old imports keep working)
from cifar_jax.commands.predict import run

if __name__ == "__main__":
    run()
