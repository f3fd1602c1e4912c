"""Report 001, section 4: loss functions (CE 83.28, focal 81.67, CE+smoothing 78.71,
CE+L2 73.03), all else fixed, on the baseline CNN of section 1 (configs/cnn_baseline.py).

The report gives no focal gamma, smoothing or L2 coefficient: gamma 2 (the focal-loss
paper's default), smoothing 0.1 (the usual value) and an explicit L2 penalty of 1e-3
(strong enough to explain the reported underfitting) are our choices.
"""

from cifar_jax.studies.sweep import sweep_config


def get_config():
    return sweep_config(
        name="losses",
        title="Loss functions, baseline CNN (report 001 sec. 4)",
        base_config="configs/cnn_baseline.py",
        variants={
            "cross_entropy": {"loss": "cross_entropy"},
            "focal": {"loss": "focal", "focal_gamma": 2.0},
            "cross_entropy_smooth": {"loss": "cross_entropy", "label_smoothing": 0.1},
            "cross_entropy_l2": {"loss": "cross_entropy", "l2_penalty": 1e-3},
        },
    )
