"""Every CIFAR-10 model of the reports, each with its own report's recipe."""

from cifar_jax.studies.sweep import sweep_config

MODELS = (
    "lenet",
    "basenet_residual",
    "deepnet",
    "cnn_baseline",
    "resnet_small",
    "resnet",
    "vgg_a",
    "vgg_a_bn",
    "cnn_bn_dropout",
    "resnet_5m",
)


def get_config():
    return sweep_config(
        name="models_c10",
        title="All CIFAR-10 models of the seed reports, each with its report's recipe",
        base_config="configs/lenet.py",
        variants={name: {"base_config": f"configs/{name}.py"} for name in MODELS},
    )
