"""airbench94: 94% CIFAR-10 test accuracy in 9.9 epochs (Keller Jordan,
``KellerJordan/cifar10-airbench``, ``legacy/airbench94.py``; arXiv 2404.00498: 94.01% mean
over 1,000 runs, 3.83 s on one A100).

The recipe, ported to the package's own parts (every number below is airbench94's):
- net ``airbench94`` (1,972,792 params): 2x2 whitening conv stem set from the first 5,000
  training images and frozen (its bias trained for 3 epochs), three conv groups
  64/256/256 with identity-initialized convs, BatchNorm with frozen scale, eps 1e-12 and
  momentum 0.6, GELU, logits / 9;
- Nesterov SGD, momentum 0.85, on the loss SUMMED over the batch of 1024 with label
  smoothing 0.2; airbench's "per 1024 examples" hyperparameters lr 11.5 and weight decay
  0.0153 are, in torch's coupled-SGD form it uses:
      lr = 11.5 / (1024 * (1 + 1 / (1 - 0.85)))          = 0.00146484...
      weight_decay = 0.0153 * 1024 / 11.5                = 1.36236...
  BatchNorm biases at 64x the lr with weight decay / 64 (so their decay step is the same);
- 476 steps (ceil(48 * 9.9), 48 full batches per epoch): linear warm-up from 0.2x over
  the first int(0.23 * 476) = 109 steps, then linear down to 0.07x at the end;
- lookahead every 5 steps with decay 0.95^5 * (step / 476)^3, weights = average at the end;
- random 2-pixel translation with reflect padding and the alternating flip;
- the 6-view TTA (mirror, plus half weight on 1-pixel shifted pairs), on logits.

Results on CPUs with the command and machine: docs/fast.md. The published GPU run keeps
the net in float16; ``--config.half_precision=true`` runs it in bfloat16.
"""

import ml_collections

from cifar_jax.config import base_config

BATCH_SIZE = 1024
MOMENTUM = 0.85
TOTAL_STEPS = 476  # ceil(50_000 // 1024 * 9.9)
STEPS_PER_EPOCH = 50_000 // BATCH_SIZE  # 48
WARMUP_STEPS = int(0.23 * TOTAL_STEPS)  # 109


def get_config() -> ml_collections.ConfigDict:
    config = base_config()
    config.model = "airbench94"
    config.activation = "gelu"
    config.bn_momentum = 0.6
    config.data_init_examples = 5000  # whitening from the first 5,000 training images

    config.dataset = "cifar10"
    config.val_examples = 0
    config.normalization = "mean_std"
    config.random_crop_padding = 2
    config.crop_padding_mode = "reflect"
    config.random_flip = True
    config.flip_mode = "alternating"

    config.optimizer = "sgd"
    config.nesterov = True
    config.momentum = MOMENTUM
    kilostep_scale = 1024 * (1 + 1 / (1 - MOMENTUM))
    config.learning_rate = 11.5 / kilostep_scale
    config.weight_decay = 0.0153 * BATCH_SIZE / 11.5  # wd / lr of airbench
    config.loss_reduction = "sum"
    config.label_smoothing = 0.2
    config.param_groups = ml_collections.ConfigDict(
        {
            # requires_grad=False in airbench: the whitening kernel and the BN scales.
            "frozen": {"match": "whiten/kernel,*/norm*/scale", "trainable_epochs": 0},
            "whiten_bias": {"match": "whiten/bias", "trainable_epochs": 3},
            "norm_bias": {
                "match": "*/norm*/bias",
                "lr_scale": 64.0,
                "weight_decay_scale": 1 / 64,
            },
        }
    )
    config.schedule = "linear"
    config.warmup_epochs = WARMUP_STEPS / STEPS_PER_EPOCH
    config.warmup_start_fraction = 0.2
    config.final_lr_fraction = 0.07
    config.lookahead_every = 5
    config.lookahead_decay = 0.95**5
    config.lookahead_power = 3.0

    config.batch_size = BATCH_SIZE
    config.eval_batch_size = 1000
    config.num_epochs = 10
    config.num_train_steps = TOTAL_STEPS
    config.tta = "airbench"
    config.log_every_steps = 16
    return config
