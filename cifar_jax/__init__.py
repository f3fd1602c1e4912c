"""cifar_jax: reproducible JAX/Flax training of CNNs on CIFAR-10 and CIFAR-100."""

__version__ = "0.1.0"
