"""The train state and the jitted steps of a run: initialization, the train step (forward,
loss, backward, update, BatchNorm statistics over the global batch, lookahead), the eval
step, and the eval loop (:func:`eval_batches`, :func:`evaluate`). :func:`jit_steps` is the
one place they are built and sharded, so the benchmark times exactly what training runs.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import linen as nn
from jax.sharding import Mesh, NamedSharding

from cifar_jax import data, losses, metrics, parallel, tracking
from cifar_jax.data import augment, pipeline
from cifar_jax.parallel import to_global, traced_on


@flax.struct.dataclass
class TrainState:
    """Everything that changes during training, and nothing else (it is checkpointed)."""

    step: jnp.ndarray
    params: Any
    batch_stats: Any
    opt_state: Any
    # Raw key data (uint32) of a typed PRNG key: Orbax cannot save typed keys.
    rng: jnp.ndarray
    # Best validation result so far, for the best checkpoint and early stopping.
    val_tracker: tracking.ValTracker
    # The weight average of config.lookahead_every ({"params", "batch_stats"}); None = off.
    lookahead: Any = None

    def variables(self) -> dict[str, Any]:
        return {"params": self.params, "batch_stats": self.batch_stats}


def create_train_state(
    model: nn.Module,
    tx: optax.GradientTransformation,
    seed: int,
    sharding: NamedSharding,
    *,
    init_images: np.ndarray | None = None,
    lookahead: bool = False,
) -> TrainState:
    """Initializes parameters and optimizer state from ``seed``, placed with ``sharding``.

    ``init_images`` (normalized training images) feed the model's data-dependent
    initializer, if it has one (``init_from_data``, e.g. airbench94's whitening stem);
    ``lookahead`` starts the weight average (config.lookahead_every) at the initial state.
    """

    def init() -> TrainState:
        init_key, params_key, dropout_key, train_key = jax.random.split(jax.random.key(seed), 4)
        del init_key  # reserved: keeps the key layout stable if init needs another stream
        variables = model.init(
            {"params": params_key, "dropout": dropout_key},
            jnp.zeros((1, 32, 32, 3), jnp.float32),
            train=False,
        )
        params = variables["params"]
        if init_images is not None and hasattr(model, "init_from_data"):
            params = model.init_from_data(params, init_images)  # host numpy: constants
        batch_stats = variables.get("batch_stats", {})
        return TrainState(
            step=jnp.zeros((), jnp.int32),
            params=params,
            batch_stats=batch_stats,
            opt_state=tx.init(params),
            rng=jax.random.key_data(train_key),
            val_tracker=tracking.init_tracker(),
            lookahead={"params": params, "batch_stats": batch_stats} if lookahead else None,
        )

    return jax.jit(init, out_shardings=sharding)()


@dataclasses.dataclass(frozen=True)
class Lookahead:
    """airbench94's lookahead (config.lookahead_*): every ``every`` steps the average
    moves toward the weights by ``1 - decay * (step / total_steps) ** power`` and the
    weights jump to it; the last step leaves the weights at the average."""

    every: int
    total_steps: int
    decay: float
    power: float

    @classmethod
    def from_config(cls, config: Any, total_steps: int | None) -> Lookahead | None:
        if not config.get("lookahead_every", 0):
            return None
        if not total_steps:
            raise ValueError("lookahead needs the run's total_steps")
        return cls(
            int(config.lookahead_every),
            int(total_steps),
            float(config.lookahead_decay),
            float(config.lookahead_power),
        )

    def apply(self, state: TrainState) -> TrainState:
        """``state`` (after its update, ``state.step`` already advanced) with the
        average updated and the weights replaced where this step is a lookahead step."""
        step = state.step
        weights = {"params": state.params, "batch_stats": state.batch_stats}
        on_period = step % self.every == 0
        fraction = step.astype(jnp.float32) / self.total_steps
        decay = self.decay * fraction**self.power
        average = jax.tree.map(
            lambda a, w: jnp.where(on_period, a + (1 - decay) * (w - a), a),
            state.lookahead,
            weights,
        )
        # airbench: the weights take the average on lookahead steps and after the last one.
        take = on_period | (step >= self.total_steps)
        weights = jax.tree.map(lambda a, w: jnp.where(take, a, w), average, weights)
        return state.replace(lookahead=average, **weights)


# config.nonfinite_loss: on a NaN/Inf training loss, stop the run or skip the step.
NONFINITE_LOSS = ("stop", "skip")
_MIX_STREAM = 0x6D6978  # folded into the step's dropout key for the mixup / cutmix draws


def train_forward(
    model: nn.Module, params: Any, state: TrainState, images: jnp.ndarray, dropout_key: Any
) -> tuple[jnp.ndarray, Any]:
    """Training-mode logits of ``params`` and the updated BatchNorm statistics."""
    logits, updates = model.apply(
        {"params": params, "batch_stats": state.batch_stats},
        images,
        train=True,
        rngs={"dropout": dropout_key},
        mutable=["batch_stats"],
    )
    return logits, updates.get("batch_stats", {})


@dataclasses.dataclass(frozen=True)
class Objective:
    """The training objective of a step, shared by the train step and analyses that take
    extra gradients on the same batch (``analyze batchnorm``): the uint8 batch normalized
    and mixed with the step's key, then ``loss`` of the training-mode forward pass."""

    model: nn.Module
    mean: np.ndarray
    std: np.ndarray
    loss: losses.Loss
    mix: augment.MixConfig | None = None

    def inputs(self, state: TrainState, batch: dict) -> tuple[jnp.ndarray, Any, Any]:
        """``(images, mix weight or None, dropout key)`` of ``batch`` at ``state.step``."""
        images = pipeline.normalize(batch["image"], self.mean, self.std)
        dropout_key = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
        lam = None
        if self.mix is not None:
            mix_key = jax.random.fold_in(dropout_key, _MIX_STREAM)
            images, lam = augment.mix_batch(mix_key, images, self.mix)
        return images, lam, dropout_key

    def __call__(
        self,
        params: Any,
        state: TrainState,
        images: jnp.ndarray,
        labels: jnp.ndarray,
        lam: Any,
        dropout_key: Any,
    ) -> tuple[jnp.ndarray, tuple[jnp.ndarray, jnp.ndarray, Any]]:
        """``(objective, (logits, per-example loss, updated BatchNorm statistics))``."""
        logits, batch_stats = train_forward(self.model, params, state, images, dropout_key)
        targets = labels
        if self.mix is not None:
            targets = augment.mixed_targets(targets, lam, logits.shape[-1])
        objective, per_example = self.loss.total(logits, targets, params)
        return objective, (logits, per_example, batch_stats)


def config_objective(
    config: ml_collections.ConfigDict, model: nn.Module, mean: np.ndarray, std: np.ndarray
) -> Objective:
    """The :class:`Objective` a run of ``config`` trains (its loss, mixup / cutmix)."""
    return Objective(
        model, mean, std, losses.make_loss(config), augment.MixConfig.from_config(config)
    )


def make_train_step(
    objective: Objective,
    tx: optax.GradientTransformation,
    skip_nonfinite: bool = False,
    *,
    lookahead: Lookahead | None = None,
) -> Callable[[TrainState, dict], tuple[TrainState, metrics.TrainMetrics]]:
    """One optimizer step on a global batch of uint8 images (normalized here, on device).

    ``objective`` is what the step minimizes (:class:`Objective`: the model, the
    normalization, the loss, mixup / cutmix with soft targets drawn from the step's key).
    The train metrics' accuracy counts each image's own label.

    With ``skip_nonfinite`` a step whose loss, gradients or updated parameters are NaN/Inf
    leaves params, statistics and optimizer state unchanged (only the step counter
    advances). ``lookahead`` averages the weights (:class:`Lookahead`), after that check.
    """

    def train_step(state: TrainState, batch: dict) -> tuple[TrainState, metrics.TrainMetrics]:
        images, lam, dropout_key = objective.inputs(state, batch)

        def loss_fn(params):
            return objective(params, state, images, batch["label"], lam, dropout_key)

        grads, (logits, per_example, batch_stats) = jax.grad(loss_fn, has_aux=True)(state.params)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        new_state = state.replace(
            step=state.step + 1,
            params=optax.apply_updates(state.params, updates),
            batch_stats=batch_stats,
            opt_state=opt_state,
        )
        if skip_nonfinite:
            finite = (
                jnp.isfinite(per_example.sum()) & all_finite(grads) & all_finite(new_state.params)
            )
            unchanged = state.replace(step=state.step + 1)
            new_state = jax.tree.map(
                lambda new, old: jnp.where(finite, new, old), new_state, unchanged
            )
        if lookahead is not None:
            new_state = lookahead.apply(new_state)
        step_metrics = metrics.batch_metrics(
            metrics.TrainMetrics, logits, batch["label"], per_example
        )
        return new_state, step_metrics

    return train_step


def make_eval_step(
    model: nn.Module, mean: np.ndarray, std: np.ndarray
) -> Callable[[TrainState, dict], metrics.EvalMetrics]:
    """Loss and accuracy of a padded eval batch; padding is masked out."""

    def eval_step(state: TrainState, batch: dict) -> metrics.EvalMetrics:
        images = pipeline.normalize(batch["image"], mean, std)
        logits = model.apply(state.variables(), images, train=False)
        per_example = losses.cross_entropy(logits, batch["label"])
        return metrics.batch_metrics(
            metrics.EvalMetrics, logits, batch["label"], per_example, mask=batch["mask"]
        )

    return eval_step


def jit_steps(
    config: ml_collections.ConfigDict,
    model: nn.Module,
    tx: optax.GradientTransformation,
    mean: np.ndarray,
    std: np.ndarray,
    mesh: Mesh,
    total_steps: int | None = None,
) -> tuple[Callable, Callable]:
    """The jitted (train_step, eval_step) of a run, sharded over ``mesh``.

    ``total_steps`` (the run's length) is needed by config.lookahead_every.

    The one place the run's steps are built, so ``python -m cifar_jax bench`` times exactly
    what :func:`train_and_evaluate` runs. The train state (argument 0) is donated.
    """
    replicated = parallel.replicated(mesh)
    batch_sharding = parallel.batch_sharded(mesh)
    train_step = make_train_step(
        config_objective(config, model, mean, std),
        tx,
        skip_nonfinite=config.nonfinite_loss == "skip",
        lookahead=Lookahead.from_config(config, total_steps),
    )
    train_step = jax.jit(
        traced_on(mesh, train_step, bf16_kernel_grads=config.cpu_bf16_kernel_grads),
        in_shardings=(replicated, batch_sharding),
        out_shardings=(replicated, replicated),
        donate_argnums=(0,),
    )
    eval_step = jax.jit(
        traced_on(mesh, make_eval_step(model, mean, std)),
        in_shardings=(replicated, batch_sharding),
        out_shardings=replicated,
    )
    return train_step, eval_step


def state_sha256(state: TrainState) -> str:
    """sha256 over the bytes of params and batch_stats leaves, in tree-flatten order."""
    digest = hashlib.sha256()
    for leaf in jax.tree.leaves({"params": state.params, "batch_stats": state.batch_stats}):
        digest.update(np.asarray(leaf.addressable_data(0)).tobytes())
    return digest.hexdigest()


def eval_batches(
    split: data.ArraySplit, batch_size: int, batch_sharding: NamedSharding
) -> Iterator[dict[str, jax.Array]]:
    """The padded, masked global eval batches of ``split`` (every example exactly once, in
    order): the one eval input loop, for metrics (:func:`evaluate`) and predictions."""
    dataset = pipeline.eval_dataset(
        split,
        global_batch_size=batch_size,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
    )
    for batch in pipeline.iterate(dataset, prefetch=2):
        yield to_global(batch, batch_sharding)


def evaluate(
    eval_step: Callable[[Any, dict], metrics.EvalMetrics],
    state: Any,
    batches: Iterable[dict[str, jax.Array]],
) -> dict[str, float]:
    """Loss and accuracy of ``eval_step`` (plain, TTA, or on moved weights) over
    ``batches`` (:func:`eval_batches`, or a list of them reused across calls)."""
    totals = None
    for batch in batches:
        m = eval_step(state, batch)
        totals = m if totals is None else totals.merge(m)
    if totals is None:
        raise ValueError("evaluate: no batches (an empty split?)")
    return {k: float(v) for k, v in totals.compute().items()}


@jax.jit
def all_finite(tree: Any) -> jax.Array:
    """Whether every leaf of ``tree`` is finite (a traced bool)."""
    leaves = jax.tree.leaves(tree)
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves])) if leaves else True
