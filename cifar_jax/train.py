"""Training and evaluation: ``train_and_evaluate(config, workdir)`` reads top to bottom.

Data parallel over a ``jax.sharding.Mesh`` of every device of every process: the batch is
sharded on the ``data`` axis, the train state is replicated, and one jitted ``train_step``
(forward, loss, backward, update, BatchNorm statistics over the global batch) runs on
all of them. The same code runs on 1 CPU, 8 simulated CPU devices, GPUs and many hosts.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections.abc import Callable
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import linen as nn
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from cifar_jax import checkpoint, data, metrics, models, optim
from cifar_jax.data import pipeline
from cifar_jax.errors import ConfigError, TrainingError


@flax.struct.dataclass
class TrainState:
    """Everything that changes during training, and nothing else (it is checkpointed)."""

    step: jnp.ndarray
    params: Any
    batch_stats: Any
    opt_state: Any
    # Raw key data (uint32) of a typed PRNG key: Orbax cannot save typed keys.
    rng: jnp.ndarray

    def variables(self) -> dict[str, Any]:
        return {"params": self.params, "batch_stats": self.batch_stats}


# ---------------------------------------------------------------------------- devices


def create_mesh(devices: list | None = None) -> Mesh:
    """A 1-D ``data`` mesh over every device of every process."""
    devices = jax.devices() if devices is None else devices
    return Mesh(np.asarray(devices), ("data",))


def check_batch_size(batch_size: int, mesh: Mesh, name: str = "batch_size") -> None:
    n = mesh.devices.size
    if batch_size <= 0 or batch_size % n:
        raise ConfigError(
            f"{name}={batch_size} cannot be split evenly over the {n} devices "
            f"({jax.process_count()} process(es)); use a positive multiple of {n}."
        )


def to_global(batch: dict[str, np.ndarray], sharding: NamedSharding) -> dict[str, jax.Array]:
    """Assembles each process's slice of a global batch into one sharded global array."""
    return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in batch.items()}


# ------------------------------------------------------------------------ state & steps


def cross_entropy(logits: jnp.ndarray, labels: jnp.ndarray, label_smoothing: float) -> jnp.ndarray:
    """Per-example cross-entropy with optional label smoothing."""
    targets = jax.nn.one_hot(labels, logits.shape[-1])
    if label_smoothing:
        targets = optax.smooth_labels(targets, label_smoothing)
    return optax.softmax_cross_entropy(logits, targets)


def create_train_state(
    model: nn.Module, tx: optax.GradientTransformation, seed: int, sharding: NamedSharding
) -> TrainState:
    """Initializes parameters and optimizer state from ``seed``, placed with ``sharding``."""

    def init() -> TrainState:
        init_key, params_key, dropout_key, train_key = jax.random.split(jax.random.key(seed), 4)
        del init_key  # reserved: keeps the key layout stable if init needs another stream
        variables = model.init(
            {"params": params_key, "dropout": dropout_key},
            jnp.zeros((1, 32, 32, 3), jnp.float32),
            train=False,
        )
        params = variables["params"]
        return TrainState(
            step=jnp.zeros((), jnp.int32),
            params=params,
            batch_stats=variables.get("batch_stats", {}),
            opt_state=tx.init(params),
            rng=jax.random.key_data(train_key),
        )

    return jax.jit(init, out_shardings=sharding)()


def make_train_step(
    model: nn.Module,
    tx: optax.GradientTransformation,
    mean: np.ndarray,
    std: np.ndarray,
    label_smoothing: float = 0.0,
) -> Callable[[TrainState, dict], tuple[TrainState, metrics.TrainMetrics]]:
    """One optimizer step on a global batch of uint8 images (normalized here, on device)."""

    def train_step(state: TrainState, batch: dict) -> tuple[TrainState, metrics.TrainMetrics]:
        images = pipeline.normalize(batch["image"], mean, std)
        dropout_key = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)

        def loss_fn(params):
            logits, updates = model.apply(
                {"params": params, "batch_stats": state.batch_stats},
                images,
                train=True,
                rngs={"dropout": dropout_key},
                mutable=["batch_stats"],
            )
            per_example = cross_entropy(logits, batch["label"], label_smoothing)
            return per_example.mean(), (logits, per_example, updates.get("batch_stats", {}))

        grads, (logits, per_example, batch_stats) = jax.grad(loss_fn, has_aux=True)(state.params)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        new_state = state.replace(
            step=state.step + 1,
            params=optax.apply_updates(state.params, updates),
            batch_stats=batch_stats,
            opt_state=opt_state,
        )
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
        per_example = cross_entropy(logits, batch["label"], 0.0)
        return metrics.batch_metrics(
            metrics.EvalMetrics, logits, batch["label"], per_example, mask=batch["mask"]
        )

    return eval_step


def state_sha256(state: TrainState) -> str:
    """sha256 over the bytes of params and batch_stats leaves, in tree-flatten order."""
    digest = hashlib.sha256()
    for leaf in jax.tree.leaves({"params": state.params, "batch_stats": state.batch_stats}):
        digest.update(np.asarray(leaf.addressable_data(0)).tobytes())
    return digest.hexdigest()


def evaluate(
    eval_step: Callable,
    state: TrainState,
    split: data.ArraySplit,
    batch_size: int,
    batch_sharding: NamedSharding,
) -> dict[str, float]:
    """Loss and accuracy over every example of ``split`` exactly once."""
    dataset = pipeline.eval_dataset(
        split,
        global_batch_size=batch_size,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
    )
    totals = None
    for batch in pipeline.iterate(dataset, prefetch=2):
        m = eval_step(state, to_global(batch, batch_sharding))
        totals = m if totals is None else totals.merge(m)
    return {k: float(v) for k, v in totals.compute().items()}


# ------------------------------------------------------------------------------ logging


class Progress:
    """The console progress line: epoch, step, loss, accuracy, lr, images/s, ETA."""

    def __init__(self, total_steps: int, steps_per_epoch: int, batch_size: int):
        self.total_steps = total_steps
        self.steps_per_epoch = steps_per_epoch
        self.batch_size = batch_size
        self._last_time: float | None = None
        self._last_step = 0

    def line(self, step: int, scalars: dict[str, float]) -> str:
        now = time.perf_counter()
        speed = 0.0
        if self._last_time is not None and step > self._last_step:
            speed = (step - self._last_step) * self.batch_size / (now - self._last_time)
        self._last_time, self._last_step = now, step
        eta = (self.total_steps - step) * self.batch_size / speed if speed else float("nan")
        epoch = step / self.steps_per_epoch
        total_epochs = self.total_steps / self.steps_per_epoch
        return (
            f"epoch {epoch:6.2f}/{total_epochs:g} | step {step}/{self.total_steps} | "
            f"loss {scalars['loss']:.4f} | acc {scalars['accuracy']:.4f} | "
            f"lr {scalars['learning_rate']:.3g} | {speed:,.0f} img/s | ETA {_hms(eta)}"
        )

    def reset_clock(self, step: int) -> None:
        """Restarts the speed measurement (after an evaluation or a checkpoint pause)."""
        self._last_time, self._last_step = time.perf_counter(), step


def _hms(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "--:--:--"
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def _console(msg: str) -> None:
    if jax.process_index() == 0:
        print(msg, flush=True)


def _truncate_metrics_log(workdir: str, step: int) -> None:
    """Drops log records written after ``step`` (they are redone after a resume)."""
    path = os.path.join(workdir, "metrics.jsonl")
    if jax.process_index() != 0 or not os.path.exists(path):
        return
    with open(path, encoding="utf-8") as f:
        lines = f.readlines()
    kept = [line for line in lines if json.loads(line).get("step", -1) <= step]
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.writelines(kept)
    os.replace(tmp, path)


# --------------------------------------------------------------------------- the run


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
    """Trains ``config`` in ``workdir`` (resuming if it holds checkpoints); returns results."""
    workdir = os.path.abspath(workdir)
    is_main = jax.process_index() == 0
    mesh = create_mesh()
    replicated = NamedSharding(mesh, P())
    batch_sharding = NamedSharding(mesh, P("data"))
    eval_batch_size = config.eval_batch_size or config.batch_size
    check_batch_size(config.batch_size, mesh)
    check_batch_size(eval_batch_size, mesh, "eval_batch_size")

    # Data.
    dataset = data.load_dataset(config)
    mean, std = pipeline.normalization_stats(config, dataset.mean, dataset.std)
    steps_per_epoch = pipeline.steps_per_epoch(len(dataset.train), config.batch_size)
    if steps_per_epoch == 0:
        raise ConfigError(
            f"batch_size={config.batch_size} is larger than the training split "
            f"({len(dataset.train)} examples); use a smaller batch_size."
        )
    total_steps = config.num_train_steps or config.num_epochs * steps_per_epoch
    if total_steps <= 0:
        raise ConfigError("num_epochs (or num_train_steps) must be > 0.")
    _console(
        f"Data: {dataset.source}: {len(dataset.train)} train, "
        f"{len(dataset.val) if dataset.val is not None else 0} val, {len(dataset.test)} test, "
        f"{dataset.num_classes} classes. {jax.device_count()} device(s) "
        f"({jax.devices()[0].platform}), {jax.process_count()} process(es)."
    )

    # Model, optimizer, state.
    model = models.build_model(config, dataset.num_classes)
    schedule = optim.learning_rate_schedule(config, steps_per_epoch, total_steps)
    tx = optim.create_optimizer(config, schedule)
    state = create_train_state(model, tx, config.seed, replicated)
    trainable_params = models.count_trainable_params(state.params)
    _console(f"Model: {config.model}, {trainable_params:,} trainable params.")

    # Resume if the workdir holds checkpoints.
    manager = checkpoint.create_manager(workdir, config.keep_checkpoints)
    train_data = pipeline.train_dataset(
        dataset.train,
        global_batch_size=config.batch_size,
        num_steps=total_steps,
        seed=config.seed,
        aug=pipeline.AugmentConfig.from_config(config),
        process_index=jax.process_index(),
        process_count=jax.process_count(),
    )
    train_iter = pipeline.iterate(train_data, config.prefetch_batches)
    restored = checkpoint.restore_latest(manager, state)
    if restored is not None:
        start_step, state, data_state = restored
        if data_state.get("next_index") != start_step:
            raise checkpoint.CheckpointError(
                f"checkpoint {start_step} in {manager.directory} holds a data iterator at "
                f"{data_state.get('next_index')}, not at its step; move the checkpoint away."
            )
        train_iter.set_state(data_state)
        _truncate_metrics_log(workdir, start_step)
        _console(f"Resumed from checkpoint at step {start_step} in {manager.directory}.")
    start_step = int(state.step)
    results_path = os.path.join(workdir, "results.json")
    if start_step == total_steps and os.path.exists(results_path):
        _console(f"{workdir} holds a finished run; its results are in {results_path}.")
        manager.close()
        with open(results_path, encoding="utf-8") as f:
            return json.load(f)

    writer = metrics.create_writer(workdir, enabled=is_main)
    if start_step == 0:
        writer.write_hparams(config.to_dict())
    if is_main:
        with open(os.path.join(workdir, "config.json"), "w", encoding="utf-8") as f:
            json.dump(config.to_dict(), f, indent=2, default=str)

    # Compile ahead of time so compile time is measured apart from training.
    train_step = jax.jit(
        make_train_step(model, tx, mean, std, config.label_smoothing),
        in_shardings=(replicated, batch_sharding),
        out_shardings=(replicated, replicated),
        donate_argnums=(0,),
    )
    eval_step = jax.jit(
        make_eval_step(model, mean, std),
        in_shardings=(replicated, batch_sharding),
        out_shardings=replicated,
    )
    example_batch = {
        "image": jax.ShapeDtypeStruct(
            (config.batch_size, 32, 32, 3), jnp.uint8, sharding=batch_sharding
        ),
        "label": jax.ShapeDtypeStruct((config.batch_size,), jnp.int32, sharding=batch_sharding),
    }
    compile_start = time.perf_counter()
    train_step = train_step.lower(state, example_batch).compile()
    compile_seconds = time.perf_counter() - compile_start

    # Train.
    checkpoint_every = config.checkpoint_every_steps or steps_per_epoch
    progress = Progress(total_steps, steps_per_epoch, config.batch_size)
    train_metrics = None
    paused_seconds = 0.0  # evaluation and checkpoint time, excluded from throughput
    steady_start = None  # after the first step: warm caches, excluded from throughput
    steady_images = 0
    loop_start = time.perf_counter()
    progress.reset_clock(start_step)
    for step in range(start_step + 1, total_steps + 1):
        batch = to_global(next(train_iter), batch_sharding)
        state, step_metrics = train_step(state, batch)
        train_metrics = step_metrics if train_metrics is None else train_metrics.merge(step_metrics)
        if steady_start is None:
            jax.block_until_ready(state)
            steady_start = time.perf_counter()
        else:
            steady_images += config.batch_size

        if step % config.log_every_steps == 0 or step == total_steps:
            scalars = {k: float(v) for k, v in train_metrics.compute().items()}
            if not math.isfinite(scalars["loss"]):
                raise TrainingError(
                    f"the training loss became {scalars['loss']} by step {step} (averaged over "
                    f"the last {config.log_every_steps} steps). Lower learning_rate (now "
                    f"{config.learning_rate}), set grad_clip_norm, or check the data. "
                    f"Checkpoints up to the last good one are kept in {manager.directory}."
                )
            scalars["learning_rate"] = float(schedule(step - 1))
            _console(progress.line(step, scalars))
            writer.write_scalars(
                step, {"split": "train", **scalars, "epoch": step / steps_per_epoch}
            )
            train_metrics = None

        pause_start = time.perf_counter()
        paused = False
        end_of_epoch = step % steps_per_epoch == 0
        epoch = step // steps_per_epoch
        if dataset.val is not None and end_of_epoch and epoch % config.eval_every_epochs == 0:
            val = evaluate(eval_step, state, dataset.val, eval_batch_size, batch_sharding)
            _console(f"  val   epoch {epoch}: loss {val['loss']:.4f} | acc {val['accuracy']:.4f}")
            writer.write_scalars(step, {"split": "val", **val, "epoch": step / steps_per_epoch})
            paused = True
        if step % checkpoint_every == 0 or step == total_steps:
            checkpoint.save(manager, step, state, train_iter.get_state())
            writer.flush()
            paused = True
        if paused:
            paused_seconds += time.perf_counter() - pause_start
            progress.reset_clock(step)

    jax.block_until_ready(state)
    train_seconds = time.perf_counter() - loop_start - paused_seconds
    steady_seconds = time.perf_counter() - (steady_start or loop_start) - paused_seconds
    manager.wait_until_finished()

    # Test.
    test = evaluate(eval_step, state, dataset.test, eval_batch_size, batch_sharding)
    _console(f"Test: loss {test['loss']:.4f} | accuracy {test['accuracy']:.4f}")
    writer.write_scalars(total_steps, {"split": "test", **test})
    writer.close()

    results = {
        "test_accuracy": test["accuracy"],
        "test_loss": test["loss"],
        "trainable_params": trainable_params,
        "epochs": total_steps / steps_per_epoch,
        "steps": total_steps,
        "train_seconds": train_seconds,
        "train_images_per_second": steady_images / steady_seconds if steady_images else None,
        "compile_seconds": compile_seconds,
        "resumed_from_step": start_step,
        "seed": config.seed,
        "state_sha256": state_sha256(state),
        "num_devices": jax.device_count(),
        "num_processes": jax.process_count(),
        "platform": jax.devices()[0].platform,
        "dataset_source": dataset.source,
        "config": config.to_dict(),
    }
    if is_main:
        _write_json_atomic(results_path, results)
    manager.close()
    return results


def _write_json_atomic(path: str, obj: Any) -> None:
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, default=str)
    os.replace(tmp, path)


__all__ = [
    "TrainState",
    "check_batch_size",
    "create_mesh",
    "create_train_state",
    "cross_entropy",
    "evaluate",
    "make_eval_step",
    "make_train_step",
    "state_sha256",
    "train_and_evaluate",
]
