"""Report 003, Table 4: "Both + Data Aug" (1,127,572 params; 57.65% test): BN and
dropout, conv depths (64, 128) (the best of section 7.1), crop + flip.

Recipe (report 003, section 3): batch 32, up to 50 epochs, Adam lr 1e-3, early stopping
(patience 10, best model restored), ReduceLROnPlateau (patience 5).
"""

import ml_collections

from cifar_jax import recipes


def get_config() -> ml_collections.ConfigDict:
    config = recipes.report003_adam()
    # Architecture: c100_bn with conv widths (64, 128), plus the "Both Improvements"
    # dropout: "a rate of 0.5 after each convolutional and dense layer" (element-wise,
    # torch nn.Dropout).
    config.model = "c100_bn_64_128"
    config.batch_norm = True
    config.conv_dropout_rate = 0.5
    config.dropout_rate = 0.5
    # Augmentation (section 6.4): RandomHorizontalFlip + RandomCrop(32, padding=4).
    config.random_crop_padding = 4
    config.random_flip = True
    return config
