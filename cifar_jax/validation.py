"""Checking a config before any data is read or any step is compiled: every field known,
every enumerated field one of the values its owner dispatches on, ranges, the data sizes
a recipe asks for, the training options that depend on each other, and the model it
names. The choices are read from the modules that implement them (a new option is written
in one place); this module sits above them, and :mod:`cifar_jax.config` below them all.
Importing jax does not start its backend, so the command line validates before it sets
the XLA flags.
"""

from __future__ import annotations

import ml_collections

from cifar_jax import losses, models, optim, steps, tracking, tta
from cifar_jax.config.fields import base_config
from cifar_jax.data import augment, pipeline, sources
from cifar_jax.errors import ConfigError


def choices() -> dict[str, tuple[str, ...]]:
    """The allowed values of each enumerated field, read from the module whose dispatch
    uses them, so a new option is written in one place."""

    return {
        "dataset": sources.DATASETS,
        "data_source": sources.DATA_SOURCES,
        "label_type": sources.LABEL_TYPES,
        "crop_padding_mode": augment.CROP_PADDING_MODES,
        "normalization": pipeline.NORMALIZATIONS,
        "autoaugment": augment.AUTOAUGMENT_POLICIES,
        "flip_mode": augment.FLIP_MODES,
        "model": models.MODEL_NAMES,
        "activation": models.ACTIVATIONS,
        "kernel_init": models.KERNEL_INITS,
        "optimizer": optim.OPTIMIZERS,
        "nonfinite_loss": steps.NONFINITE_LOSS,
        "schedule": optim.SCHEDULES,
        "schedule_step": optim.SCHEDULE_STEPS,
        "plateau_metric": optim.PLATEAU_METRICS,
        "plateau_threshold_mode": optim.PLATEAU_THRESHOLD_MODES,
        "loss": losses.LOSSES,
        "loss_reduction": losses.LOSS_REDUCTIONS,
        "best_metric": tracking.BEST_METRICS,
        "test_checkpoint": tracking.TEST_CHECKPOINTS,
        "tta": tta.TTA_MODES,
    }


def validate_config(config: ml_collections.ConfigDict) -> None:
    """The one check of a config, before any data is read or any step is compiled: every
    entry point (cli.prepare, sweep and reproduce variants, bench overrides,
    train.train_and_evaluate) calls it, and the modules that use the fields trust it.

    Raises ConfigError naming the field, the bad value and what to use instead. A config
    already validated with these exact values (the command line's check, then
    train_and_evaluate's for Python callers) is not checked again: one check per run.
    """
    key = config.to_json_best_effort(sort_keys=True)
    if key in _VALIDATED:
        return
    _validate(config)
    _VALIDATED.add(key)


# The configs (as sorted JSON) that passed validate_config in this process.
_VALIDATED: set[str] = set()


def _validate(config: ml_collections.ConfigDict) -> None:
    reference = base_config()
    unknown = sorted(set(config.keys()) - set(reference.keys()))
    if unknown:
        raise ConfigError(
            f"unknown config field(s) {unknown}; the known fields are listed in "
            "cifar_jax/config/fields.py."
        )
    for name, allowed in choices().items():
        if config[name] not in allowed:
            raise ConfigError(
                f"{name}={config[name]!r} is not known; use one of {list(allowed)} "
                f"(e.g. --config.{name}={allowed[0]})."
            )
    positive = (
        "batch_size",
        "learning_rate",
        "log_every_steps",
        "eval_every_epochs",
        "keep_checkpoints",
        "prefetch_batches",
    )
    for name in positive:
        if not config[name] > 0:
            raise ConfigError(f"{name}={config[name]} must be > 0.")
    non_negative = (
        "eval_batch_size",
        "num_epochs",
        "num_train_steps",
        "class_subset",
        "val_examples",
        "max_train_examples",
        "random_crop_padding",
        "weight_decay",
        "warmup_epochs",
        "grad_clip_norm",
        "checkpoint_every_steps",
    )
    for name in non_negative:
        if config[name] < 0:
            raise ConfigError(f"{name}={config[name]} must be >= 0.")
    if config.num_epochs == 0 and config.num_train_steps == 0:
        raise ConfigError("num_epochs and num_train_steps are both 0; set one of them > 0.")
    if not 0 <= config.label_smoothing < 1:
        raise ConfigError(f"label_smoothing={config.label_smoothing} must be in [0, 1).")
    for name in ("dropout_rate", "conv_dropout_rate"):
        if config[name] != -1 and not 0 <= config[name] < 1:
            raise ConfigError(
                f"{name}={config[name]} must be in [0, 1) (0 = off), or -1 for the model's default."
            )
    if config.label_type == "coarse" and config.dataset != "cifar100":
        raise ConfigError("label_type='coarse' exists only for dataset='cifar100'.")
    for name in ("synthetic_train_examples", "synthetic_test_examples"):
        if config.data_source == "synthetic" and not config[name] > 0:
            raise ConfigError(f"{name}={config[name]} must be positive; set --config.{name}.")
    _check_training_options(config)
    _check_data_sizes(config)
    # Unknown model overrides (widths, stage_blocks, ...) and bn_momentum; the class count
    # does not change what is checked.
    models.build_model(config, 10)


def _check_data_sizes(config: ml_collections.ConfigDict) -> None:
    """class_subset, val_examples and batch_size against the data's size as its source
    defines it (sources.expected_train_examples), so they fail before any file is read."""
    classes = sources.num_classes(config.dataset, config.label_type)
    if config.class_subset > classes:
        raise ConfigError(
            f"class_subset={config.class_subset} but {config.dataset} with label_type="
            f"{config.label_type!r} has only {classes} classes; set --config.class_subset to "
            f"1..{classes} (0 = all)."
        )
    total = sources.expected_train_examples(config)
    if total is None:  # only the files tell (allow_partial_train_files): load_dataset checks
        return
    if config.val_examples >= total:
        raise ConfigError(
            f"val_examples={config.val_examples} leaves no training data: the training split "
            f"has {total} examples; set --config.val_examples below {total}."
        )
    train = total - config.val_examples
    if config.max_train_examples:
        train = min(train, config.max_train_examples)
    if config.batch_size > train:
        raise ConfigError(
            f"batch_size={config.batch_size} is larger than the training split ({train} "
            "examples); use a smaller batch_size."
        )


def _check_training_options(config: ml_collections.ConfigDict) -> None:
    """The ranges of the loss, optimizer, schedule, augmentation and early-stopping fields."""

    def check(name: str, ok: bool, allowed: str, example) -> None:
        if not ok:
            raise ConfigError(
                f"{name}={config[name]!r} is out of range: it must be {allowed} "
                f"(e.g. --config.{name}={example})."
            )

    for name in (
        "focal_gamma",
        "l2_penalty",
        "rmsprop_eps",
        "plateau_threshold",
        "plateau_min_lr",
        "plateau_patience",
        "plateau_cooldown",
        "early_stopping_patience",
        "color_jitter_brightness",
        "color_jitter_contrast",
        "color_jitter_saturation",
        "mixup_alpha",
        "cutmix_alpha",
    ):
        check(name, config[name] >= 0, ">= 0 (0 = off / none)", 0)
    for name in (
        "rmsprop_alpha",
        "rmsprop_momentum",
        "onecycle_base_momentum",
        "onecycle_max_momentum",
    ):
        check(name, 0 <= config[name] < 1, "in [0, 1)", base_config()[name])
    check("color_jitter_hue", 0 <= config.color_jitter_hue <= 0.5, "in [0, 0.5]", 0.1)
    check("warmup_start_fraction", 0 <= config.warmup_start_fraction < 1, "in [0, 1)", 0.2)
    check("target_accuracy", 0 <= config.target_accuracy < 1, "in [0, 1) (0 = off)", 0.94)
    check("lookahead_every", config.lookahead_every >= 0, ">= 0 steps (0 = off)", 5)
    check("lookahead_decay", 0 <= config.lookahead_decay <= 1, "in [0, 1]", 0.95**5)
    check("lookahead_power", config.lookahead_power >= 0, ">= 0", 3)
    check("data_init_examples", config.data_init_examples > 0, "> 0 images", 5000)
    check("muon_ns_steps", config.muon_ns_steps >= 1, ">= 1 iterations", 5)

    optim.param_groups(config)
    check("plateau_factor", 0 < config.plateau_factor < 1, "in (0, 1)", 0.5)
    check("lr_step_gamma", 0 < config.lr_step_gamma <= 1, "in (0, 1]", 0.1)
    check("lr_step_epochs", config.lr_step_epochs > 0, "a positive number of epochs", 30)
    check("onecycle_pct_start", 0 < config.onecycle_pct_start < 1, "in (0, 1)", 0.3)
    for name in ("onecycle_div_factor", "onecycle_final_div_factor"):
        check(name, config[name] > 0, "> 0", base_config()[name])
    check("random_rotation", 0 <= config.random_rotation <= 180, "in [0, 180] degrees", 15)
    check("random_erasing_prob", 0 <= config.random_erasing_prob <= 1, "in [0, 1]", 0.5)
    check("cutout_size", 0 <= config.cutout_size <= 32, "in [0, 32] pixels", 16)
    if config.cpu_bf16_kernel_grads and not config.half_precision:
        raise ConfigError(
            "cpu_bf16_kernel_grads=True chooses how bf16 convs take their kernel gradients, "
            "but half_precision=False (float32 convs); set --config.half_precision=True too, "
            "or drop cpu_bf16_kernel_grads."
        )
    if config.flip_mode == "alternating" and not config.random_flip:
        raise ConfigError(
            "flip_mode='alternating' chooses which images random_flip mirrors, but "
            "random_flip=False; set --config.random_flip=True, or --config.flip_mode=random."
        )
    scale, ratio = tuple(config.random_erasing_scale), tuple(config.random_erasing_ratio)
    check(
        "random_erasing_scale",
        len(scale) == 2 and 0 < scale[0] <= scale[1] <= 1,
        "a pair (lo, hi) with 0 < lo <= hi <= 1",
        "'(0.02, 0.33)'",
    )
    check(
        "random_erasing_ratio",
        len(ratio) == 2 and 0 < ratio[0] <= ratio[1],
        "a pair (lo, hi) with 0 < lo <= hi",
        "'(0.3, 3.3)'",
    )
    if config.schedule == "onecycle" and config.warmup_epochs > 0:
        raise ConfigError(
            f"warmup_epochs={config.warmup_epochs} with schedule='onecycle': the one-cycle "
            "schedule has its own warmup (onecycle_pct_start); set --config.warmup_epochs=0."
        )
    if config.schedule_step == "epoch":
        if config.schedule == "onecycle":
            raise ConfigError(
                "schedule_step='epoch' with schedule='onecycle': torch's OneCycleLR steps "
                "once per batch; set --config.schedule_step=step."
            )
        if config.warmup_epochs != int(config.warmup_epochs):
            raise ConfigError(
                f"warmup_epochs={config.warmup_epochs} with schedule_step='epoch': an "
                "epoch-stepped warmup needs a whole number of epochs (e.g. "
                f"--config.warmup_epochs={max(1, round(config.warmup_epochs))})."
            )
    needs_val = {
        "schedule": config.schedule == "plateau",
        "early_stopping_patience": config.early_stopping_patience > 0,
        "test_checkpoint": config.test_checkpoint == "best",
    }
    for name, needed in needs_val.items():
        if needed and config.val_examples == 0:
            raise ConfigError(
                f"{name}={config[name]!r} needs a validation split, but val_examples=0; "
                f"set e.g. --config.val_examples=5000."
            )
