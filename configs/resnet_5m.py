"""Report 004: the modified ResNet under 5M parameters (4,662,098 params; 85.16%
validation accuracy).

Recipe (sections 2 and 4): 40k/10k train/validation split; SGD lr 0.01, momentum 0.9,
weight decay 5e-4; StepLR(step_size=10, gamma=0.1); 40 epochs; batch 64 (625 steps per
epoch); crop + flip + color jitter + rotation + random erasing, normalized with 0.5.
"""

import ml_collections

from cifar_jax.config_base import base_config


def get_config() -> ml_collections.ConfigDict:
    config = base_config()
    # Architecture: stem conv3x3(48) BN ReLU; BasicBlock stages (48, 196, 192, 384) with
    # (2, 2, 2, 1) blocks and strides (1, 2, 2, 2); global average pool; dropout 0.5; fc.
    config.model = "resnet_5m"
    config.activation = "relu"
    config.batch_norm = True
    config.dropout_rate = 0.5  # "50% Dropout after global average pooling".
    config.kernel_init = "pytorch"

    # Data: "80:20 ratio: 40,000 training / 10,000 validation".
    config.dataset = "cifar10"
    config.val_examples = 10_000
    # Augmentation: RandomCrop(32, padding=4) + RandomHorizontalFlip.
    config.random_crop_padding = 4
    config.random_flip = True
    # NOT YET: ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2).
    # NOT YET: RandomRotation(15 degrees).
    # NOT YET: RandomErasing(p=0.5, scale=(0.02, 0.2)) after normalization.
    config.normalization = "half"  # Normalize((0.5,)*3, (0.5,)*3).

    # Optimization.
    config.optimizer = "sgd"
    config.learning_rate = 0.01
    config.momentum = 0.9
    config.nesterov = False
    config.weight_decay = 5e-4  # torch SGD weight_decay: coupled L2.
    # NOT YET: StepLR(step_size=10 epochs, gamma=0.1). Cosine is the closest available
    # decaying schedule (both end near 1e-5 after 40 epochs).
    config.schedule = "cosine"
    config.warmup_epochs = 0.0
    config.batch_size = 64
    config.num_epochs = 40
    return config
