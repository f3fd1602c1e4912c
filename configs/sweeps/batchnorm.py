"""Report 001, section 10: VGG-A with and without BatchNorm, 25 epochs (84.89 vs 83.26).

The loss-landscape side of that section is `python -m cifar_jax analyze batchnorm`.
"""

from cifar_jax.studies.sweep import sweep_config


def get_config():
    return sweep_config(
        name="batchnorm",
        title="VGG-A with vs without BatchNorm, 25 epochs (report 001 sec. 10)",
        base_config="configs/vgg_a.py",
        base_overrides={"num_epochs": 25},
        variants={
            "vgg_a": {"base_config": "configs/vgg_a.py"},
            "vgg_a_bn": {"base_config": "configs/vgg_a_bn.py"},
        },
    )
