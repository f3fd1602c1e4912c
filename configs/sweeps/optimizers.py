"""Report 001, section 6: optimizers on the [128, 128, 256] GELU residual net, 25 epochs,
cosine annealing with warmup (SGD 86.72, Adam 80.79, AdamW 86.69, RMSprop 74.44).

Learning rates are not given: SGD 0.1 (the final recipe's), Adam/AdamW/RMSprop 1e-3;
AdamW weight decay 0.01 (torch's default); warmup 1 epoch. Our choices.
"""

from cifar_jax.studies.sweep import sweep_config


def get_config():
    return sweep_config(
        name="optimizers",
        title="Optimizers, [128,128,256] GELU residual net, 25 epochs (report 001 sec. 6)",
        base_config="configs/resnet.py",
        base_overrides={"num_epochs": 25, "schedule": "cosine", "warmup_epochs": 1.0},
        variants={
            "sgd": {"optimizer": "sgd", "learning_rate": 0.1, "momentum": 0.9},
            "adam": {"optimizer": "adam", "learning_rate": 1e-3, "weight_decay": 0.0},
            "adamw": {"optimizer": "adamw", "learning_rate": 1e-3, "weight_decay": 0.01},
            "rmsprop": {"optimizer": "rmsprop", "learning_rate": 1e-3, "weight_decay": 0.0},
        },
    )
