"""One run's set-up, in one place: data -> normalization -> model -> schedule -> optimizer
-> train state -> jitted steps. Training, the benchmark, the analyses, ``summary`` and the
run loader all build from here, so none of them can drift from what training runs.

    exp = experiment.build(config_lib.load_config_file("configs/lenet.py"))
    state, _ = exp.train_step(exp.state, exp.to_global(next(exp.train_iterator())))
    print(exp.evaluate(state, exp.dataset.test))  # {"loss": ..., "accuracy": ...}

The train step donates its state argument: keep the state it returns, not ``exp.state``.
:func:`build_abstract` is the same set-up without data, with an abstract state (shapes,
dtypes and shardings), for lowering and restoring checkpoints.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import linen as nn
from jax.sharding import Mesh, NamedSharding

from cifar_jax import config as config_lib
from cifar_jax import data, models, optim, parallel, steps, tta
from cifar_jax.data import pipeline
from cifar_jax.errors import ConfigError

# build_abstract's stand-in epoch length: the run's real one needs the data.
ABSTRACT_STEPS_PER_EPOCH = 100


@dataclasses.dataclass(frozen=True)
class Experiment:
    """Everything a run of ``config`` needs, built once by :func:`build`."""

    config: ml_collections.ConfigDict
    dataset: data.CifarData | None  # None for build_abstract
    num_classes: int
    mean: np.ndarray  # normalization, [0, 1] units
    std: np.ndarray
    model: nn.Module
    steps_per_epoch: int
    total_steps: int
    # The learning rate at each update (with learning_rate_in_state: the peak-1 shape
    # that the state's learning rate scales).
    schedule: optax.Schedule
    tx: optax.GradientTransformation
    state: steps.TrainState  # initial (abstract for build_abstract); donated by train_step
    train_step: Callable  # jitted (state, batch) -> (state, TrainMetrics); donates state
    eval_step: Callable  # jitted (state, padded batch) -> EvalMetrics
    mesh: Mesh
    replicated: NamedSharding
    batch_sharding: NamedSharding

    @property
    def eval_batch_size(self) -> int:
        return config_lib.eval_batch_size(self.config)

    def trainable_params(self) -> int:
        return models.count_trainable_params(self.state.params)

    def to_global(self, batch: dict[str, np.ndarray]) -> dict[str, jax.Array]:
        """This process's slice of a global batch as one array sharded over the mesh."""
        return parallel.to_global(batch, self.batch_sharding)

    def train_iterator(self, num_steps: int | None = None) -> Any:
        """The config's checkpointable training batches (host arrays, this process's slice),
        ``num_steps`` of them (default: the run's ``total_steps``)."""
        dataset = pipeline.config_train_dataset(
            self.config, self._data().train, self.mean, num_steps or self.total_steps
        )
        return pipeline.iterate(dataset, self.config.prefetch_batches)

    def eval_batches(self, split: data.ArraySplit) -> Iterator[dict[str, jax.Array]]:
        """The padded global eval batches of ``split`` (:func:`steps.eval_batches`)."""
        return steps.eval_batches(split, self.eval_batch_size, self.batch_sharding)

    def evaluate(
        self, state: Any, split: data.ArraySplit, eval_step: Callable | None = None
    ) -> dict[str, float]:
        """Loss and accuracy of ``state`` on every example of ``split`` once, with the
        run's eval step or another one (e.g. :meth:`tta_eval_step`)."""
        return steps.evaluate(eval_step or self.eval_step, state, self.eval_batches(split))

    def tta_eval_step(self, mode: str) -> Callable:
        """The jitted eval step on the mean TTA prediction (:mod:`cifar_jax.tta`)."""
        step = tta.make_eval_step(self.model, self.mean, self.std, mode)
        return jax.jit(
            parallel.traced_on(self.mesh, step),
            in_shardings=(self.replicated, self.batch_sharding),
            out_shardings=self.replicated,
        )

    def example_batch(self, *, mask: bool = False) -> dict[str, jax.ShapeDtypeStruct]:
        """Abstract global batch of ``config.batch_size`` for ahead-of-time lowering
        (``mask``: an eval batch)."""
        size = self.config.batch_size

        def spec(shape: tuple[int, ...], dtype: Any) -> jax.ShapeDtypeStruct:
            return jax.ShapeDtypeStruct(shape, dtype, sharding=self.batch_sharding)

        batch = {"image": spec((size, 32, 32, 3), jnp.uint8), "label": spec((size,), jnp.int32)}
        if mask:
            batch["mask"] = spec((size,), jnp.bool_)
        return batch

    def _data(self) -> data.CifarData:
        if self.dataset is None:
            raise ValueError("this Experiment was built without data (build_abstract)")
        return self.dataset


# ------------------------------------------------------------------------ the pieces


def run_length(
    config: ml_collections.ConfigDict, train_examples: int, total_steps: int | None = None
) -> tuple[int, int]:
    """``(steps_per_epoch, total_steps)`` of a run on ``train_examples`` images;
    ``total_steps`` replaces the config's budget (num_train_steps, else num_epochs)."""
    steps_per_epoch = pipeline.steps_per_epoch(train_examples, config.batch_size)
    if steps_per_epoch == 0:
        raise ConfigError(
            f"batch_size={config.batch_size} is larger than the training split "
            f"({train_examples} examples); use a smaller batch_size."
        )
    total = int(total_steps or config.num_train_steps or config.num_epochs * steps_per_epoch)
    if total <= 0:
        raise ConfigError("num_epochs (or num_train_steps) must be > 0.")
    return steps_per_epoch, total


def build_optimizer(
    config: ml_collections.ConfigDict,
    steps_per_epoch: int,
    total_steps: int,
    *,
    learning_rate_in_state: bool = False,
) -> tuple[optax.Schedule, optax.GradientTransformation]:
    """``(schedule, tx)`` of the config's optimizer over a run of ``total_steps``.

    With ``learning_rate_in_state`` the peak learning rate is a value of the optimizer
    state (``opt_state.hyperparams["learning_rate"]``, starting at config.learning_rate)
    scaling the config's schedule of peak 1 (returned as ``schedule``), so one compiled
    train step serves several learning rates (``analyze batchnorm``).
    """
    if not learning_rate_in_state:
        schedule = optim.learning_rate_schedule(config, steps_per_epoch, total_steps)
        return schedule, optim.create_optimizer(config, schedule, total_steps, steps_per_epoch)
    unit = config.copy_and_resolve_references()
    unit.learning_rate = 1.0
    shape = optim.learning_rate_schedule(unit, steps_per_epoch, total_steps)

    def factory(learning_rate: jax.Array) -> optax.GradientTransformation:
        return optim.create_optimizer(
            config, lambda count: learning_rate * shape(count), total_steps, steps_per_epoch
        )

    return shape, optax.inject_hyperparams(factory)(learning_rate=float(config.learning_rate))


def init_images(
    config: ml_collections.ConfigDict,
    model: nn.Module,
    dataset: data.CifarData,
    mean: np.ndarray,
    std: np.ndarray,
) -> np.ndarray | None:
    """Normalized training images for a data-dependent initializer (e.g. airbench94's
    whitening stem, ``init_from_data``); None for models without one."""
    if not hasattr(model, "init_from_data"):
        return None
    first = dataset.train.images[: config.data_init_examples]
    return np.asarray(pipeline.normalize(first, mean, std))


def _assemble(
    config: ml_collections.ConfigDict,
    dataset: data.CifarData | None,
    num_classes: int,
    mean: np.ndarray,
    std: np.ndarray,
    steps_per_epoch: int,
    total_steps: int,
    mesh: Mesh | None,
    make_state: Callable[[nn.Module, optax.GradientTransformation, NamedSharding], Any],
    learning_rate_in_state: bool,
) -> Experiment:
    mesh = mesh or parallel.create_mesh()
    replicated = parallel.replicated(mesh)
    model = models.build_model(config, num_classes)
    schedule, tx = build_optimizer(
        config, steps_per_epoch, total_steps, learning_rate_in_state=learning_rate_in_state
    )
    state = make_state(model, tx, replicated)
    train_step, eval_step = steps.jit_steps(config, model, tx, mean, std, mesh, total_steps)
    return Experiment(
        config=config,
        dataset=dataset,
        num_classes=num_classes,
        mean=mean,
        std=std,
        model=model,
        steps_per_epoch=steps_per_epoch,
        total_steps=total_steps,
        schedule=schedule,
        tx=tx,
        state=state,
        train_step=train_step,
        eval_step=eval_step,
        mesh=mesh,
        replicated=replicated,
        batch_sharding=parallel.batch_sharded(mesh),
    )


# ------------------------------------------------------------------------ builders


def build(
    config: ml_collections.ConfigDict,
    *,
    dataset: data.CifarData | None = None,
    mesh: Mesh | None = None,
    total_steps: int | None = None,
    learning_rate_in_state: bool = False,
    on_data: Callable[[data.CifarData, int, int], None] | None = None,
) -> Experiment:
    """The run of ``config``, set up in this order, each part checked before the next is
    built: the mesh and the batch sizes it must split, the data (``dataset``, else
    loaded), the run length, normalization, model, schedule, optimizer, initial state
    (seeded by config.seed) and jitted steps.

    ``total_steps`` replaces the config's budget; ``learning_rate_in_state``: see
    :func:`build_optimizer`; ``on_data(dataset, steps_per_epoch, total_steps)`` is called
    once the data and the run length are known, before anything is built from them (the
    trainer times the data phase, logs it and checks its schedule there).
    """
    mesh = mesh or parallel.create_mesh()
    parallel.check_batch_size(config.batch_size, mesh)
    parallel.check_batch_size(config_lib.eval_batch_size(config), mesh, "eval_batch_size")
    dataset = data.load_dataset(config) if dataset is None else dataset
    steps_per_epoch, total = run_length(config, len(dataset.train), total_steps)
    if on_data is not None:
        on_data(dataset, steps_per_epoch, total)
    mean, std = pipeline.normalization_stats(config, dataset.mean, dataset.std)

    def make_state(model, tx, replicated):
        return steps.create_train_state(
            model,
            tx,
            config.seed,
            replicated,
            init_images=init_images(config, model, dataset, mean, std),
            lookahead=config.lookahead_every > 0,
        )

    return _assemble(
        config, dataset, int(dataset.num_classes), mean, std, steps_per_epoch, total, mesh,
        make_state, learning_rate_in_state,
    )  # fmt: skip


def build_abstract(
    config: ml_collections.ConfigDict,
    num_classes: int,
    *,
    mesh: Mesh | None = None,
    mean: np.ndarray | None = None,
    std: np.ndarray | None = None,
) -> Experiment:
    """The run of ``config`` without reading data or checking batch sizes against this
    machine's devices: the state is abstract
    (``jax.ShapeDtypeStruct`` leaves with their shardings), an epoch is
    ``ABSTRACT_STEPS_PER_EPOCH`` steps (1 when the config sets num_train_steps), and
    mean / std default to 0.5 (they are constants of the steps, not part of their
    shapes). For lowering steps and restoring checkpoints.
    """
    half = np.full(3, 0.5, np.float32)
    mean = half if mean is None else mean
    std = half if std is None else std
    # With a step budget, one step per epoch: every epoch-length field (warmup, a group's
    # trainable_epochs) then spans as few steps as any real epoch length gives it, so a
    # schedule the real run accepted is accepted here too (100 steps per epoch made a
    # 12-step run's 1-epoch warmup "cover the whole run").
    per_epoch = 1 if config.num_train_steps else ABSTRACT_STEPS_PER_EPOCH
    total = max(1, int(config.num_train_steps or config.num_epochs * per_epoch))

    def make_state(model, tx, replicated):
        lookahead = config.lookahead_every > 0
        state = jax.eval_shape(
            lambda: steps.create_train_state(model, tx, 0, replicated, lookahead=lookahead)
        )
        return jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated), state
        )

    return _assemble(
        config, None, num_classes, mean, std, per_epoch, total, mesh, make_state, False
    )


__all__ = [
    "ABSTRACT_STEPS_PER_EPOCH",
    "Experiment",
    "build",
    "build_abstract",
    "build_optimizer",
    "init_images",
    "run_length",
]
