"""Report 003, Table 4: regularization on the 20-class CIFAR-100 task.

Baseline 54.70, dropout 52.70, BN 59.15, both 56.25, both + augmentation 57.65 (and the
advanced CNN 69.05). Each variant is its own seed config, as the report's models are.
"""

from cifar_jax.studies.sweep import sweep_config


def get_config():
    return sweep_config(
        name="c100_regularization",
        title="Dropout / BatchNorm / augmentation, CIFAR-100 first 20 classes (report 003)",
        base_config="configs/c100_baseline.py",
        variants={
            "baseline": {"base_config": "configs/c100_baseline.py"},
            "dropout": {
                "base_config": "configs/c100_baseline.py",
                "conv_dropout_rate": 0.5,
                "dropout_rate": 0.5,
            },
            "batchnorm": {"base_config": "configs/c100_bn.py"},
            "both": {
                "base_config": "configs/c100_bn.py",
                "conv_dropout_rate": 0.5,
                "dropout_rate": 0.5,
            },
            "both_aug": {"base_config": "configs/c100_bn_64_128.py"},
            "advanced": {"base_config": "configs/c100_advanced.py"},
        },
    )
