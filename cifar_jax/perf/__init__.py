"""Benchmarks (``python -m cifar_jax bench|bench_ops|bench_levers``): the real train/eval
steps timed against PyTorch twins (``bench``), per-op profiles (``bench_ops``) and the CPU
kernel levers (``bench_levers``). Nothing in training, the steps or the models imports
them."""
