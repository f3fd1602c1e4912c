"""Report 003, section 4 / Listing 2: the baseline CNN on 20 CIFAR-100 classes
(546,388 params; 54.70% test accuracy).

The "Dropout Only" variant (52.70%) is this config with
--config.conv_dropout_rate=0.5 --config.dropout_rate=0.5.

Recipe (report 003, section 3): batch 32, up to 50 epochs, Adam lr 1e-3, early stopping
(patience 10, best model restored), ReduceLROnPlateau (patience 5).
"""

import ml_collections

from cifar_jax import recipes


def get_config() -> ml_collections.ConfigDict:
    config = recipes.report003_adam()
    # Architecture: conv3x3(32) ReLU pool, conv3x3(64) ReLU pool, fc128 ReLU, fc.
    config.model = "c100_baseline"
    return config
