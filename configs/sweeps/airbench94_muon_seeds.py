"""airbench94_muon (configs/airbench94_muon.py) over 5 seeds: the mean test accuracy with
its TTA and the time to it, beside airbench94 (configs/sweeps/airbench94_seeds.py), for
docs/fast.md.

    python -m cifar_jax.sweep --config=configs/sweeps/airbench94_muon_seeds.py \\
        --workdir=runs/airbench94_muon [--config.seeds='(0,)'] [--trial=K]
"""

from cifar_jax.commands.sweep import sweep_config


def get_config():
    return sweep_config(
        name="airbench94_muon_seeds",
        title="airbench94_muon on CIFAR-10: 5 seeds, float32",
        base_config="configs/airbench94_muon.py",
        variants={"float32": {}},
        seeds=(0, 1, 2, 3, 4),
    )
