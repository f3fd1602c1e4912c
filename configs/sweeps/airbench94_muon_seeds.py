"""airbench94_muon (configs/airbench94_muon.py) over 5 seeds: the mean test accuracy with
its TTA and the time to it, beside airbench94 (configs/sweeps/airbench94_seeds.py), for
docs/fast.md. ``float32`` is the recipe as written; ``bf16`` runs it with
--config.half_precision=true (bf16 convs through oneDNN on CPUs with AMX or AVX512_BF16;
airbench itself runs in float16 on its GPU) and --config.cpu_bf16_kernel_grads=true (the
kernel gradients from the bf16 activations too: ~1.2x the step on an AMX CPU given to the
run, slower on cores shared with another busy process; cifar_jax/kernels/onednn.py).

    python -m cifar_jax sweep --config=configs/sweeps/airbench94_muon_seeds.py \\
        --workdir=runs/airbench94_muon [--config.seeds='(0,)'] [--trial=K]
"""

from cifar_jax.studies.sweep import sweep_config


def get_config():
    return sweep_config(
        name="airbench94_muon_seeds",
        title="airbench94_muon on CIFAR-10: 5 seeds, float32 and bfloat16",
        base_config="configs/airbench94_muon.py",
        variants={"float32": {}, "bf16": {"half_precision": True, "cpu_bf16_kernel_grads": True}},
        seeds=(0, 1, 2, 3, 4),
    )
