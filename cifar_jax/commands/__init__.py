"""The command-line programs but training (``python -m cifar_jax <command>`` or ``cifar-jax
<command>``, dispatched by cifar_jax/__main__.py; training is cifar_jax/main.py): each
parses its flags and calls the library; none is imported by training, the steps or the
models."""
