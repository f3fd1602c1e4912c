"""Report 004: the modified ResNet under 5M parameters (4,662,098 params; 85.16%
validation accuracy).

Recipe (sections 2 and 4): 40k/10k train/validation split; SGD lr 0.01, momentum 0.9,
weight decay 5e-4; StepLR(step_size=10, gamma=0.1); 40 epochs; batch 64 (625 steps per
epoch); crop + flip + color jitter + rotation + random erasing, normalized with 0.5.
"""

import ml_collections

from cifar_jax.config import base_config


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
    # ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2), RandomRotation(15).
    config.color_jitter_brightness = 0.2
    config.color_jitter_contrast = 0.2
    config.color_jitter_saturation = 0.2
    config.random_rotation = 15.0
    config.normalization = "half"  # Normalize((0.5,)*3, (0.5,)*3).
    # RandomErasing(p=0.5, scale=(0.02, 0.2)) after Normalize: torchvision's default
    # ratio (0.3, 3.3) and value 0, i.e. the erased box becomes mid-gray (0.5).
    config.random_erasing_prob = 0.5
    config.random_erasing_scale = (0.02, 0.2)
    config.random_erasing_ratio = (0.3, 3.3)

    # Optimization.
    config.optimizer = "sgd"
    config.learning_rate = 0.01
    config.momentum = 0.9
    config.nesterov = False
    config.weight_decay = 5e-4  # torch SGD weight_decay: coupled L2.
    # StepLR(step_size=10, gamma=0.1), stepped once per epoch: 0.01, 1e-3, 1e-4, 1e-5.
    config.schedule = "step"
    config.lr_step_epochs = 10
    config.lr_step_gamma = 0.1
    config.warmup_epochs = 0.0
    config.batch_size = 64
    config.num_epochs = 40
    return config
