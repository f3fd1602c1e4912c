"""Report 001, section 7: the final model (3,195,306 params; 95.40% test accuracy).

Recipe: SGD with momentum, initial LR 0.1 with cosine annealing, augmented training,
~200 epochs (the loss-landscape plots run to epoch 200).

Section 6's optimizer ablation (25 epochs, cosine with warmup; its learning rates and
warmup length are not given):
  --config.num_epochs=25 --config.warmup_epochs=2 --config.optimizer=rmsprop \
  --config.learning_rate=1e-3       (or adam / adamw with 1e-3, sgd with 0.1)
"""

import ml_collections

from cifar_jax.config import base_config


def get_config() -> ml_collections.ConfigDict:
    config = base_config()
    # Architecture: resnet_small widened to stages (128, 128, 256) (the best of section
    # 5's width ablation), GELU (chosen in section 3), dropout before the fc.
    config.model = "resnet"
    config.activation = "gelu"
    config.batch_norm = True
    config.dropout_rate = 0.5  # rate not given: torch nn.Dropout's default p.
    config.kernel_init = "pytorch"

    # Data: the full 50k training set; test accuracy is reported.
    config.dataset = "cifar10"
    config.val_examples = 0
    # Augmentation: the report's pipeline from section 2: crop (padding 4) + flip.
    config.random_crop_padding = 4
    config.random_flip = True
    # AutoAugment with torchvision's CIFAR10 policy, part of the report's pipeline (2).
    config.autoaugment = "cifar10"
    config.normalization = "mean_std"  # CIFAR mean/std (section 2).

    # Optimization: SGD momentum 0.9 (section 6), lr 0.1, cosine annealing to 0.
    config.optimizer = "sgd"
    config.learning_rate = 0.1
    config.momentum = 0.9
    config.nesterov = False
    # Not stated in the report; 5e-4 is the standard value for SGD on CIFAR ResNets.
    config.weight_decay = 5e-4
    config.schedule = "cosine"
    # Section 6 used warmup for its 25-epoch runs; the final recipe mentions only cosine.
    config.warmup_epochs = 0.0
    config.label_smoothing = 0.0  # plain CE won section 4's loss ablation.
    config.batch_size = 128  # not restated for the final run: the report's batch size.
    config.num_epochs = 200
    return config
