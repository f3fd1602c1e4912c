"""Report 000, Table 3 / App. C: DeepNet (18,617,482 params; ~90% test accuracy).

Recipe: the report's shared setup (section 2.2): 40k/10k split, batch 1024, 100 epochs,
Adam, cosine annealing; random flip and normalization to [-1, 1] (Table 2).
"""

import ml_collections

from cifar_jax.config import base_config


def get_config() -> ml_collections.ConfigDict:
    config = base_config()
    # Architecture: [conv5x5(128) BN ReLU]x2 pool Dropout2d, [conv3x3(256) BN ReLU]x2
    # pool Dropout2d, fc1024 BN ReLU dropout, fc512 BN ReLU dropout, fc.
    config.model = "deepnet"
    config.activation = "relu"
    config.batch_norm = True  # BN after every conv and hidden fc (App. C).
    config.conv_dropout_rate = 0.25  # nn.Dropout2d(p=0.25) after each pooled block.
    config.dropout_rate = 0.5  # nn.Dropout(p=0.5) after each hidden fc.
    config.kernel_init = "pytorch"

    # Data: 40k train / 10k validation.
    config.dataset = "cifar10"
    config.val_examples = 10_000
    # Augmentation (Table 2): random flip, then normalize to [-1, 1].
    config.random_flip = True
    config.random_crop_padding = 0  # no crop in Table 2.
    config.normalization = "half"

    # Optimization: Adam (lr not given; 1e-3 = Adam's torch default), cosine annealing.
    config.optimizer = "adam"
    config.learning_rate = 1e-3
    config.weight_decay = 0.0  # none mentioned.
    config.schedule = "cosine"
    config.warmup_epochs = 0.0
    config.batch_size = 1024
    config.num_epochs = 100
    return config
