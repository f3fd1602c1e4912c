"""Augmentation on / off on the residual net of report 001 (section 2: crop + flip +
AutoAugment "had limited effect"), plus random erasing (report 004's recipe)."""

from cifar_jax.studies.sweep import sweep_config

NONE = {
    "random_crop_padding": 0,
    "random_flip": False,
    "autoaugment": "none",
    "random_erasing_prob": 0.0,
}


def get_config():
    return sweep_config(
        name="augmentation",
        title="Augmentation ablation, residual net (reports 001 and 004)",
        base_config="configs/resnet_small.py",
        variants={
            "none": NONE,
            "crop_flip": {**NONE, "random_crop_padding": 4, "random_flip": True},
            "crop_flip_autoaugment": {
                **NONE,
                "random_crop_padding": 4,
                "random_flip": True,
                "autoaugment": "cifar10",
            },
            "crop_flip_autoaugment_erasing": {
                **NONE,
                "random_crop_padding": 4,
                "random_flip": True,
                "autoaugment": "cifar10",
                "random_erasing_prob": 0.5,
            },
        },
    )
