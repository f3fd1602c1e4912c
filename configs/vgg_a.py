"""Report 001, section 10: VGG-A without BatchNorm (9,750,922 params; 83.26% test).

The BN study trains VGG-A with and without BN for 25 epochs with "all other settings
(data aug, dropout, optimizer)" the same, and sweeps learning rates {0.15, 0.1, 0.075,
0.05} for its loss-landscape band (30 epochs each). The optimizer and LR of the
25-epoch comparison are not stated; the choices are in cifar_jax/recipes.py.
"""

import ml_collections

from cifar_jax import recipes


def get_config() -> ml_collections.ConfigDict:
    config = recipes.report001_vgg_bn_study()
    # Architecture: VGG config A: 64 M 128 M 256 256 M 512 512 M 512 512 M, fc512 ReLU,
    # fc512 ReLU, fc. No classifier dropout by default (the 9.75M count is the plain
    # VGG-A classifier); add one with --config.dropout_rate=0.5.
    config.model = "vgg_a"
    config.batch_norm = False  # no BN layers; the only difference from vgg_a_bn.
    return config
