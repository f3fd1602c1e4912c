"""Report 001, section 3: activation functions in the residual CNN (30 epochs).

Reported test accuracy: relu 87.20, leaky_relu 87.39, gelu 87.16, silu 85.90, mish 85.58,
prelu 85.04, elu 78.57. "Based on the previously optimized CNN model": the residual
model of section 2 (configs/resnet_small.py), everything else fixed.
"""

from cifar_jax.studies.sweep import sweep_config

ACTIVATIONS = ("relu", "leaky_relu", "elu", "gelu", "silu", "mish", "prelu")


def get_config():
    return sweep_config(
        name="activations",
        title="Activation functions, residual CNN (report 001 sec. 3)",
        base_config="configs/resnet_small.py",
        base_overrides={"num_epochs": 30},
        variants={name: {"activation": name} for name in ACTIVATIONS},
    )
