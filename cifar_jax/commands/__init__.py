"""The command-line programs (``python -m cifar_jax.<command>`` runs the shim of the same name
at the package root, or the ``cifar-jax-<command>`` console script): each parses its flags
and calls the library; none is imported by training, the steps or the models."""
