"""Report 003, section 6.3 / Table 4: "BatchNorm Only" (546,836 params; 59.15% test).

The "Both Improvements" variant (56.25%) is this config with
--config.conv_dropout_rate=0.5 --config.dropout_rate=0.5.

Recipe (report 003, section 3): batch 32, up to 50 epochs, Adam lr 1e-3, early stopping
(patience 10, best model restored), ReduceLROnPlateau (patience 5).
"""

import ml_collections

from cifar_jax import recipes


def get_config() -> ml_collections.ConfigDict:
    config = recipes.report003_adam()
    # Architecture: c100_baseline with BN after each conv and after fc128.
    config.model = "c100_bn"
    config.batch_norm = True
    return config
