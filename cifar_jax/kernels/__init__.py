"""CPU kernels (oneDNN convolutions, the hand-written BatchNorm gradient, the reshape
max-pool, materialized activations), chosen per lowering platform. Only
``cifar_jax.models.layers`` uses them from the model side."""
