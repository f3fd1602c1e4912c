"""Report 000: which reading of its recipe gives its numbers (LeNet 61%, BaseNet with a
residual block 63%)? Our configs (Adam 1e-3, cosine per step, flip) give more
(docs/reproduction.md). The report names "SGD and Adam" without learning rates and lists a
flip in its pipeline; its Net is the PyTorch CIFAR-10 tutorial's, whose optimizer is
SGD(lr=0.001, momentum=0.9). Each variant changes one thing of configs/lenet.py or
configs/basenet_residual.py:

- ``no_flip``: no random flip (the model then overfits the 40k images);
- ``sgd_tutorial``: the tutorial's SGD(lr=0.001, momentum=0.9);
- ``sgd``: SGD(lr=0.01, momentum=0.9), a common CIFAR choice;
- ``epoch_cosine``: CosineAnnealingLR stepped once per epoch, as torch users write it.
"""

from cifar_jax.studies.sweep import sweep_config

READINGS = {
    "no_flip": {"random_flip": False},
    "sgd_tutorial": {"optimizer": "sgd", "learning_rate": 1e-3, "momentum": 0.9},
    "sgd": {"optimizer": "sgd", "learning_rate": 1e-2, "momentum": 0.9},
    "epoch_cosine": {"schedule_step": "epoch"},
}


def get_config():
    return sweep_config(
        name="report000_readings",
        title="Report 000 recipe readings: LeNet and BaseNet+residual, one change each",
        base_config="configs/lenet.py",
        variants={
            **{
                f"lenet_{name}": {"base_config": "configs/lenet.py", **change}
                for name, change in READINGS.items()
            },
            # BaseNet+residual trains ~4x slower on a CPU: the no-flip reading only, to
            # fit one 2-core session beside the reproduction runs.
            "basenet_residual_no_flip": {
                "base_config": "configs/basenet_residual.py",
                **READINGS["no_flip"],
            },
        },
        seeds=(0,),
    )
