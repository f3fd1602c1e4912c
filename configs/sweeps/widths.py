"""Report 001, section 5: width / depth of the residual net (10 variants).

"Input channels" is the stem width, "output channels per layer" the stage widths (3 or 4
stages of 2 BasicBlocks; stages after the first downsample by 2). GELU, Adam 1e-3, the
same augmentation and scheduler for all; 30 epochs (the report does not say: our choice,
as in its other ablations). Reported: 85.83, 87.41, 89.84, 86.26, 88.43, 81.71, 86.24,
87.70, 83.26, 86.31 in the order below.
"""

from cifar_jax.studies.sweep import sweep_config

VARIANTS = (
    (32, (32, 64, 128)),
    (32, (64, 128, 128)),
    (32, (128, 128, 256)),
    (64, (64, 128, 128)),
    (64, (64, 128, 256)),
    (16, (16, 32, 64, 128)),
    (32, (32, 64, 128, 256)),
    (32, (64, 128, 256, 512)),
    (32, (64, 64, 128, 128)),
    (64, (64, 64, 128, 256)),
)


def get_config():
    return sweep_config(
        name="widths",
        title="Stem width x stage widths of the residual net (report 001 sec. 5)",
        base_config="configs/resnet_small.py",
        base_overrides={
            "activation": "gelu",
            "optimizer": "adam",
            "learning_rate": 1e-3,
            "weight_decay": 0.0,
            "num_epochs": 30,
        },
        variants={
            f"in{stem}_" + "_".join(map(str, widths)): {
                "stem_width": stem,
                "widths": widths,
                "stage_blocks": (2,) * len(widths),
                "stage_strides": (1,) + (2,) * (len(widths) - 1),
            }
            for stem, widths in VARIANTS
        },
    )
