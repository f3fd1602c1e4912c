"""Muon as airbench94_muon.py writes it: momentum, then each update orthogonalized by a
quintic Newton-Schulz iteration (:func:`newton_schulz`); the optimizer of a param group
with ``optimizer="muon"``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from cifar_jax.errors import ConfigError

# The quintic Newton-Schulz coefficients of Muon (Keller Jordan), chosen to maximize the
# slope at zero rather than to converge (see airbench94_muon.py).
NEWTON_SCHULZ_COEFFS = (3.4445, -4.7750, 2.0315)


def newton_schulz(g: jax.Array, steps: int, eps: float = 1e-7) -> jax.Array:
    """airbench94_muon's ``zeropower_via_newtonschulz5``: the 2-D ``g`` with its singular
    values pushed towards 1 (roughly ``U V^T`` of its SVD) by ``steps`` quintic
    iterations, after scaling ``g`` to Frobenius norm <= 1. airbench runs it in bfloat16
    on its GPU; here it runs in ``g``'s dtype."""
    a, b, c = NEWTON_SCHULZ_COEFFS
    x = g / (jnp.linalg.norm(g) + eps)
    tall = x.shape[0] > x.shape[1]
    if tall:
        x = x.T
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x.T if tall else x


def orthogonalize(ns_steps: int) -> optax.GradientTransformation:
    """Each update, as the matrix ``(fan_out, fan_in)`` (a conv kernel HWIO flattened as
    torch's ``g.reshape(len(g), -1)`` of OIHW, up to a column order the iteration does
    not depend on), through :func:`newton_schulz`."""

    def one(u: jax.Array) -> jax.Array:
        if u.ndim < 2:
            raise ConfigError(
                f"a Muon param group holds a parameter of shape {u.shape}: Muon updates "
                "matrices and conv kernels only. Fix the group's match (e.g. '*/conv*/kernel')."
            )
        matrix = u.reshape(-1, u.shape[-1]).T.astype(jnp.float32)
        return newton_schulz(matrix, ns_steps).T.reshape(u.shape).astype(u.dtype)

    def update(updates, state, params=None):
        del params
        return jax.tree.map(one, updates), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def renormalize_weights() -> optax.GradientTransformation:
    """airbench94_muon's ``p *= sqrt(len(p)) / p.norm()`` before each step, as an update
    (added last in the chain): each weight rescaled to Frobenius norm sqrt(fan_out)."""

    def update(updates, state, params=None):
        if params is None:
            raise ValueError("renormalize_weights needs the params in update()")

        def one(u, p):
            p = p.astype(jnp.float32)
            scale = jnp.sqrt(float(p.shape[-1])) / jnp.linalg.norm(p)
            return (u + p * (scale - 1.0)).astype(u.dtype)

        return jax.tree.map(one, updates, params), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def muon(
    schedule: optax.Schedule,
    momentum: float,
    *,
    nesterov: bool = True,
    ns_steps: int = 5,
    weight_decay: float = 0.0,
    renormalize: bool = False,
) -> list[optax.GradientTransformation]:
    """Muon as airbench94_muon.py writes it, as the parts of a chain: momentum ``buf =
    momentum * buf + g`` (Nesterov: ``g + momentum * buf``), the update orthogonalized
    (:func:`orthogonalize`), ``p -= lr * update``; with ``renormalize`` each weight is first
    rescaled to norm sqrt(fan_out) (:func:`renormalize_weights`). ``weight_decay`` is
    coupled L2 as for SGD (airbench uses none on its Muon filters)."""
    if ns_steps < 1:
        raise ConfigError(f"muon_ns_steps={ns_steps} must be >= 1 (e.g. 5; airbench uses 3).")
    parts = [optax.add_decayed_weights(weight_decay)] if weight_decay > 0 else []
    parts += [
        optax.trace(decay=momentum, nesterov=nesterov),
        orthogonalize(ns_steps),
        optax.scale_by_learning_rate(schedule),
    ]
    if renormalize:
        parts.append(renormalize_weights())
    return parts
