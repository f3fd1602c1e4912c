"""Report 002: the CNN with BatchNorm and dropout (1,278,218 params; the report's
"~1,276,734" undercounts BN; 75-85% expected test accuracy).

Recipe (Training Process): Adam lr 1e-3, weight decay 1e-4, batch 64, 20 epochs,
ReduceLROnPlateau, gradient clipping at norm 1.0, early stopping; flip, crop (padding 4),
rotation and color jitter; mean (0.4914, 0.4822, 0.4465) / std (0.2470, 0.2435, 0.2616).
"""

import ml_collections

from cifar_jax.config import base_config


def get_config() -> ml_collections.ConfigDict:
    config = base_config()
    # Architecture: [conv3x3 BN ReLU pool Dropout2d(0.3)] x3 (32, 64, 128), fc512 BN ReLU
    # dropout(0.5), fc256 BN ReLU dropout(0.5), fc.
    config.model = "cnn_bn_dropout"
    config.activation = "relu"
    config.batch_norm = True
    config.conv_dropout_rate = 0.3  # "Dropout2d: p=0.3" / "30% for convolutional layers".
    config.dropout_rate = 0.5  # "50% for fully connected layers".
    config.kernel_init = "pytorch"

    # Data. The report validates every epoch (scheduler, early stopping) but gives no
    # split size: 5,000 images (10%) of the training set are held out, a choice.
    config.dataset = "cifar10"
    config.val_examples = 5_000
    # Augmentation: flip (p=0.5) + random crop 32 with padding 4.
    config.random_flip = True
    config.random_crop_padding = 4
    # RandomRotation(15) and ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2)
    # (the report lists rotation before jitter; cifar_jax applies jitter first, see
    # cifar_jax/data/augment.py: the two orders differ only in the rotated-in corners).
    config.random_rotation = 15.0
    config.color_jitter_brightness = 0.2
    config.color_jitter_contrast = 0.2
    config.color_jitter_saturation = 0.2
    # The report's mean/std are the data set's true per-channel statistics.
    config.normalization = "mean_std"

    # Optimization.
    config.optimizer = "adam"
    config.learning_rate = 1e-3
    config.weight_decay = 1e-4  # torch Adam weight_decay: coupled L2.
    config.grad_clip_norm = 1.0  # "We use max norm = 1.0".
    # ReduceLROnPlateau on validation loss: factor 0.5, patience 3, min_lr 1e-6.
    config.schedule = "plateau"
    config.plateau_metric = "val_loss"
    config.plateau_factor = 0.5
    config.plateau_patience = 3
    config.plateau_min_lr = 1e-6
    config.warmup_epochs = 0.0
    # Early stopping on validation accuracy, patience 5; "save model with best validation
    # accuracy", which the final test then uses. (The report's extra "5%" criterion
    # contradicts its own "no improvement for 5 epochs"; the latter is implemented.)
    config.best_metric = "val_accuracy"
    config.early_stopping_patience = 5
    config.test_checkpoint = "best"
    config.batch_size = 64
    config.num_epochs = 20
    return config
