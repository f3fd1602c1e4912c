"""The base config: every field a run can set, with its default and its meaning.

Each file in ``configs/`` starts from :func:`base_config` and changes what its recipe
needs, so a field means the same thing in every config and any of them can be overridden
on the command line (``--config.learning_rate=0.05``). Unknown fields are rejected
(:func:`cifar_jax.validation.validate_config`).
"""

from __future__ import annotations

import os

import ml_collections


def default_data_dir() -> str:
    """``$CIFAR_JAX_DATA`` if set, else ``~/.cache/cifar_jax``."""
    return os.environ.get("CIFAR_JAX_DATA") or os.path.join(
        os.path.expanduser("~"), ".cache", "cifar_jax"
    )


def base_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()

    # ---------------------------------------------------------------- data
    # "cifar10" or "cifar100".
    c.dataset = "cifar10"
    # Folder holding the official release (extracted or as the .tar.gz archive).
    c.data_dir = default_data_dir()
    # Where the images come from: "auto" (official files under data_dir; if none, download
    # them there), "files" (official files only, never download), "download" (download
    # if missing), "tfds" (a prepared TFDS dataset read with tfds.data_source), or
    # "synthetic" (random images; smoke tests only, never chosen automatically).
    c.data_source = "auto"
    # TFDS data dir for data_source="tfds" ("" = TFDS's default).
    c.tfds_data_dir = ""
    # CIFAR-100 labels: "fine" (100 classes) or "coarse" (20 superclasses).
    c.label_type = "fine"
    # Keep only the first N classes (labels stay 0..N-1); 0 = all classes.
    c.class_subset = 0
    # Size of the seeded, stratified validation split taken from the training set; 0 = none.
    c.val_examples = 0
    # Train on a seeded, class-balanced subset of the training split; 0 = all of it.
    c.max_train_examples = 0
    # Read only the CIFAR-10 training batch files that are there (data_batch_1..5, at
    # least one) instead of failing on a missing one: for machines that get only part of
    # the data (scripts/gpu_check.sh). The run's dataset_source names the files read.
    c.allow_partial_train_files = False
    # Number of images per split for data_source="synthetic".
    c.synthetic_train_examples = 2048
    c.synthetic_test_examples = 512

    # -------------------------------------------------------- augmentation
    # Random crop after padding each side by this many pixels; 0 = no crop.
    c.random_crop_padding = 4
    # How the crop pads: "constant" (zeros) or "reflect".
    c.crop_padding_mode = "constant"
    # Random horizontal flip with probability 0.5.
    c.random_flip = True
    # Which images random_flip mirrors: "random" (each image of each batch with
    # probability 0.5) or "alternating" (airbench94: a fixed random half of the images,
    # chosen per image from the seed, in even epochs and the other half in odd epochs, so
    # each image is mirrored in exactly one of two consecutive epochs). Needs random_flip.
    c.flip_mode = "random"
    # AutoAugment policy after crop/flip: "none" or "cifar10" (torchvision's
    # AutoAugmentPolicy.CIFAR10: 25 sub-policies of two ops, one drawn per image).
    c.autoaugment = "none"
    # ColorJitter strengths (torchvision): factors uniform in [max(0, 1 - s), 1 + s],
    # the enabled ops in a random order per image. 0 = that op off.
    c.color_jitter_brightness = 0.0
    c.color_jitter_contrast = 0.0
    c.color_jitter_saturation = 0.0
    # ColorJitter hue, in [0, 0.5] (torchvision): hue_factor uniform in [-h, h], the image
    # converted to HSV, its hue shifted by hue_factor (mod 1) and converted back; one of
    # the jitter ops in the random order above. 0 = off.
    c.color_jitter_hue = 0.0
    # RandomRotation: angle uniform in [-d, d] degrees, nearest, zero fill. 0 = off.
    c.random_rotation = 0.0
    # RandomErasing (torchvision, applied as if after normalization: the box becomes the
    # mean colour): probability per image (0 = off), area fraction range, aspect range.
    c.random_erasing_prob = 0.0
    c.random_erasing_scale = (0.02, 0.33)
    c.random_erasing_ratio = (0.3, 3.3)
    # Cutout: a square of this side (pixels) at a random centre, clipped at the border,
    # filled with the mean colour (0 after normalization). 0 = off.
    c.cutout_size = 0
    # Mixup / cutmix Beta(alpha, alpha) parameter, mixed in the train step with soft
    # labels (torchvision v2 MixUp/CutMix semantics; both > 0: one of the two per batch,
    # each with probability 1/2). 0 = off.
    c.mixup_alpha = 0.0
    c.cutmix_alpha = 0.0
    # "mean_std": the data set's per-channel mean/std; "half": (x - 0.5) / 0.5, i.e. [-1, 1];
    # "none": x / 255, i.e. [0, 1] (torchvision ToTensor without Normalize).
    c.normalization = "mean_std"

    # --------------------------------------------------------------- model
    # Model name; see cifar_jax.models.MODEL_NAMES.
    c.model = "lenet"
    # Activation after each hidden layer: relu, leaky_relu, elu, gelu, silu, mish, prelu
    # (prelu learns one slope per activation site, so it adds trainable parameters).
    c.activation = "relu"
    # Width (channels) of each stage / conv block; () = the model's own default.
    c.widths = ()
    # Residual blocks per stage (ResNets) or conv layers per stage (plain CNNs); () = the
    # model's own default.
    c.stage_blocks = ()
    # Stride of the first block of each stage (ResNets); () = the model's own default.
    c.stage_strides = ()
    # Channels of the stem convolution (ResNets); 0 = the model's own default.
    c.stem_width = 0
    # Widths of the hidden fully connected layers; () = the model's own default.
    c.head_widths = ()
    # Dropout rate before / between the fully connected layers. -1 = the model's own
    # default (see cifar_jax.models), 0 = off.
    c.dropout_rate = -1.0
    # Dropout rate after conv blocks (plain CNNs only): channel-wise like torch's Dropout2d
    # where the model's report used Dropout2d, element-wise otherwise. -1 = the model's
    # own default, 0 = off.
    c.conv_dropout_rate = -1.0
    # False removes BatchNorm from models that have it; True keeps each model's own layout
    # (it does not add BN to lenet, vgg_a or c100_baseline).
    c.batch_norm = True
    # BatchNorm running-average momentum (flax convention: 0.9 == torch momentum 0.1).
    c.bn_momentum = 0.9
    # Weight init: "pytorch" (torch's default uniform init) or "kaiming" (He normal, fan_out).
    c.kernel_init = "pytorch"
    # bfloat16 compute (flax examples/imagenet style): activations, convs and dense layers
    # in bf16; params, optimizer state, BatchNorm statistics, logits and loss in float32.
    # For GPUs/TPUs. Allowed on CPU, where only CPUs with bf16 hardware (AMX, AVX512_BF16)
    # run it fast (its convs through oneDNN); elsewhere it is slower than float32 and the
    # log says so.
    c.half_precision = False
    # With half_precision on a CPU whose oneDNN runs bf16 (AMX, AVX512_BF16): the convs'
    # kernel gradients from the bf16 activations (True) instead of float32 copies of them
    # (False). The same products summed in another order; ~1.2x faster airbench94 steps
    # with the cores to the run alone, but oneDNN's AMX kernel gradient stalls (4-10x
    # slower) on cores shared with another busy process, hence off by default. No effect
    # on GPUs/TPUs. See cifar_jax/kernels/onednn.py (bf16_kernel_grads).
    c.cpu_bf16_kernel_grads = False
    # With half_precision: compute in float32 instead where bf16 is known to be slower than
    # float32, a CPU whose oneDNN runs bf16 convs without AMX (AVX512_BF16 alone, or no
    # bf16 path at all); GPUs/TPUs and AMX CPUs keep bf16. Decided once, when a run starts
    # (a resumed run keeps the precision its config.json records); the log and
    # results.json `half_precision` say which ran and why. For recipes meant to run as
    # written anywhere (configs/fast94.py). No effect with half_precision=False.
    c.half_precision_fallback = False
    # Models with a data-dependent initializer (airbench94's whitening stem) set it from
    # this many training images (the first ones of the split, normalized, not augmented)
    # before the first step. Ignored by other models.
    c.data_init_examples = 5000

    # --------------------------------------------------------- optimization
    # "sgd", "adam", "adamw" or "rmsprop".
    c.optimizer = "sgd"
    # Peak learning rate (after warmup).
    c.learning_rate = 0.1
    # SGD momentum (0 = plain SGD) and Nesterov momentum.
    c.momentum = 0.9
    c.nesterov = False
    # Adam/AdamW moment decay rates and epsilon.
    c.adam_b1 = 0.9
    c.adam_b2 = 0.999
    c.adam_eps = 1e-8
    # RMSprop (torch semantics: v = alpha v + (1 - alpha) g^2, step g / (sqrt(v) + eps),
    # optional momentum on that step).
    c.rmsprop_alpha = 0.99
    c.rmsprop_eps = 1e-8
    c.rmsprop_momentum = 0.0
    # Weight decay. sgd/adam: coupled L2 added to the gradient (torch's weight_decay);
    # adamw: decoupled. Applied to every parameter, as torch does by default.
    c.weight_decay = 0.0
    # Learning-rate schedule: "cosine" or "linear" (to final_lr_fraction * peak), "constant", "step"
    # (torch StepLR: times lr_step_gamma every lr_step_epochs epochs), "onecycle" (torch
    # OneCycleLR's cosine learning rate, and momentum cycled if onecycle_cycle_momentum)
    # or "plateau" (torch ReduceLROnPlateau on a validation metric; needs val_examples > 0).
    c.schedule = "cosine"
    # When the learning rate changes: "step" (every optimizer step) or "epoch" (torch's
    # scheduler.step() once per epoch: constant within an epoch, at the per-step value of
    # the epoch's first step, i.e. cosine = torch CosineAnnealingLR(T_max=num_epochs) at
    # the epoch index; a warmup epoch takes the value at its end, peak * (e + 1) /
    # warmup_epochs, and warmup_epochs must be whole). "step" schedules change per epoch
    # either way. Not with onecycle (per batch in torch).
    c.schedule_step = "step"
    # Linear warmup to the peak, in epochs (fractions allowed; not with onecycle, which
    # has its own), starting from warmup_start_fraction * peak (0 = from 0).
    c.warmup_epochs = 0.0
    c.warmup_start_fraction = 0.0
    # Cosine / linear end value as a fraction of the peak learning rate.
    c.final_lr_fraction = 0.0
    # schedule="step": decay period in epochs, and the factor applied each period.
    c.lr_step_epochs = 30
    c.lr_step_gamma = 0.1
    # schedule="onecycle" (torch OneCycleLR defaults): fraction of the run spent rising,
    # start lr = peak / div_factor, final lr = start / final_div_factor.
    c.onecycle_pct_start = 0.3
    c.onecycle_div_factor = 25.0
    c.onecycle_final_div_factor = 1e4
    # schedule="onecycle": cycle the momentum inversely to the learning rate (torch's
    # cycle_momentum=True): max_momentum at the start, base_momentum at the lr peak, back
    # to max_momentum at the end, with the same cosine phases. It replaces SGD's and
    # RMSprop's momentum and Adam/AdamW's adam_b1 (also when those are 0, as torch does).
    # False = the configured momentum stays constant.
    c.onecycle_cycle_momentum = True
    c.onecycle_base_momentum = 0.85
    c.onecycle_max_momentum = 0.95
    # schedule="plateau" (torch ReduceLROnPlateau defaults): the watched metric
    # ("val_loss": lower is better; "val_accuracy": higher is better), the factor, the
    # evaluations without an improvement of more than plateau_threshold tolerated before
    # lowering, and the floor: new lr = max(lr * factor, min_lr), skipped if that lowers
    # it by less than torch's eps 1e-8. Its state is in the optimizer state, so it
    # survives a resume.
    c.plateau_metric = "val_loss"
    c.plateau_factor = 0.1
    c.plateau_patience = 10
    c.plateau_threshold = 1e-4
    c.plateau_min_lr = 0.0
    # How plateau_threshold counts: "rel" (better = below best * (1 - threshold) for a
    # loss, above best * (1 + threshold) for an accuracy) or "abs" (below best - threshold,
    # above best + threshold).
    c.plateau_threshold_mode = "rel"
    # Evaluations after a reduction during which evaluations without an improvement are
    # not counted (torch's cooldown). 0 = none.
    c.plateau_cooldown = 0
    # Clip gradients to this global norm; 0 = no clipping.
    c.grad_clip_norm = 0.0
    # Optimizer parameter groups (torch's param groups), e.g.
    #   --config.param_groups.norm_bias.match='*/norm*/bias' (comma-separated globs over
    #   '/'-joined parameter paths such as group1/norm1/bias; `python -m cifar_jax summary`
    #   lists them), .lr_scale (times the learning rate), .weight_decay_scale (times
    #   weight_decay) and .trainable_epochs (-1 = the whole run, 0 = frozen, k = trained for
    #   the first k epochs only), .compress_schedule (true: the whole schedule runs within
    #   the trainable epochs), .optimizer (one of the optimizers above or "muon"; default
    #   the config's) and .momentum (-1 = momentum / adam_b1 above). Each parameter may
    #   match one group; the rest train as configured above. Empty = one group.
    c.param_groups = ml_collections.ConfigDict()
    # Muon (param groups with optimizer="muon"; Keller Jordan's, as airbench94_muon.py
    # writes it): Newton-Schulz iterations per update, and whether each weight is first
    # rescaled to Frobenius norm sqrt(fan_out) as airbench's Muon does.
    c.muon_ns_steps = 5
    c.muon_renormalize = False
    # Lookahead / weight averaging (airbench94): every lookahead_every steps (0 = off) the
    # average moves toward the weights, avg += (1 - d) * (w - avg), with d =
    # lookahead_decay * (step / total_steps) ** lookahead_power, and the weights are set to
    # the average; after the last step the weights are the average. BatchNorm running
    # statistics are averaged with the parameters.
    c.lookahead_every = 0
    c.lookahead_decay = 0.95**5
    c.lookahead_power = 3.0
    # Training loss: "cross_entropy" or "focal" (Lin et al.: -(1 - p_t)^gamma log p_t).
    # Validation and test losses are always plain cross-entropy.
    c.loss = "cross_entropy"
    c.focal_gamma = 2.0
    # Label smoothing of the training targets (either loss).
    c.label_smoothing = 0.0
    # How the batch's per-example losses combine: "mean" or "sum" (airbench94; the
    # gradient, and so the right learning rate, then scales with the batch size).
    c.loss_reduction = "mean"
    # Explicit L2 penalty added to the training loss: l2_penalty * sum of the squares of
    # all parameters (torch's "loss + lambda * sum(p.pow(2).sum())"). Independent of
    # weight_decay. 0 = off.
    c.l2_penalty = 0.0

    # ------------------------------------------------------------ schedule
    # Global batch size, split evenly over all devices of all processes.
    c.batch_size = 128
    # Evaluation batch size; 0 = batch_size.
    c.eval_batch_size = 0
    c.num_epochs = 100
    # Stop after this many steps instead (0 = num_epochs full epochs). The learning-rate
    # schedule is laid out over the steps actually trained.
    c.num_train_steps = 0
    # Seed of every random choice: init, split, shuffle, augmentation, dropout.
    c.seed = 0

    # ----------------------------------------------------- logging & saving
    # Print a progress line / write train metrics every N steps.
    c.log_every_steps = 50
    # Evaluate on the validation split every N epochs (if there is one).
    c.eval_every_epochs = 1
    # The validation metric that picks the best checkpoint (saved under <workdir>/best
    # whenever it improves, if there is a validation split) and that early stopping
    # watches: "val_accuracy" (higher is better) or "val_loss" (lower is better).
    c.best_metric = "val_accuracy"
    # Stop as soon as an end-of-epoch check (plain, no TTA) reaches this accuracy, and
    # report time_to_target_seconds (from the run's start) in results.json; checked on the
    # validation split if there is one, else on the test split. 0 = off. (airbench's own
    # protocol is a fixed budget whose final TTA accuracy is the number: target 0.)
    c.target_accuracy = 0.0
    # Stop after this many validation evaluations in a row without a new best
    # best_metric; 0 = never stop early. Needs val_examples > 0.
    c.early_stopping_patience = 0
    # The state the final test evaluates: "final" (the last step), "best" (the best
    # checkpoint) or "auto" (best with early stopping, final otherwise).
    c.test_checkpoint = "auto"
    # Test-time augmentation for the final test evaluation, reported next to the plain
    # numbers as test_accuracy_tta / test_loss_tta in results.json: "none", "flip"
    # (average the softmax of the image and its mirror) or "flip_translate" (the same
    # plus +-2 px shifts with zero padding: 10 views), or "airbench" (airbench94's level-2
    # TTA: a weighted mean of the LOGITS, not the softmax, of 6 views: the image, its
    # mirror, and both of them shifted 1 px up-left and down-right with reflect padding).
    # See cifar_jax/tta.py.
    c.tta = "none"
    # Save a checkpoint every N steps; 0 = at the end of every epoch.
    c.checkpoint_every_steps = 0
    # Keep the newest N checkpoints.
    c.keep_checkpoints = 3
    # On a NaN/Inf training loss: "stop" (at once, naming the step; checkpoints keep the
    # last good state) or "skip" (leave the state unchanged for that step and go on).
    c.nonfinite_loss = "stop"
    # Batches the input pipeline prepares ahead of the train step (threads).
    c.prefetch_batches = 4

    # ------------------------------------------------------------- runtime
    # On CPU, route convolutions through XLA's Eigen path instead of YNNPACK (measured
    # 2.5-4x faster on 2-core AVX2 machines). Ignored on GPU/TPU.
    c.cpu_fast_conv_flags = True
    # Let malloc (glibc) keep freed memory for reuse instead of returning large blocks to
    # the OS after every step: XLA:CPU re-allocates a step's activation buffers on every
    # step, and page-faulting them in again cost up to half of a step (1.2-2x faster
    # train steps with it; docs/performance.md item 9). The process then keeps its peak memory
    # until it exits. Process-wide: it applies to the input pipeline too, and on GPU hosts.
    c.reuse_host_memory = True
    # Bitwise-reproducible GPU runs: sets --xla_gpu_deterministic_ops and
    # --xla_gpu_exclude_nondeterministic_ops, and max-pools without select-and-scatter
    # (it has no deterministic GPU kernel). Slower on GPU; CPU runs are deterministic anyway.
    c.deterministic = False
    return c


def eval_batch_size(config: ml_collections.ConfigDict) -> int:
    """The batch size of the eval passes: ``eval_batch_size``, or ``batch_size`` when 0."""
    return int(config.eval_batch_size or config.batch_size)
