"""Training and evaluation: ``train_and_evaluate(config, workdir)`` reads top to bottom.

Data parallel over a ``jax.sharding.Mesh`` of every device of every process: the batch is
sharded on the ``data`` axis, the train state is replicated, and one jitted ``train_step``
(forward, loss, backward, update, BatchNorm statistics over the global batch) runs on
all of them. The same code runs on 1 CPU, 8 simulated CPU devices, GPUs and many hosts.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import time
from collections.abc import Iterator
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging
from jax.experimental import multihost_utils

from cifar_jax import (
    checkpoint,
    data,
    experiment,
    holds,
    inference,
    kernels,
    metrics,
    optim,
    preemption,
    runtime,
    tracking,
    validation,
)
from cifar_jax import workdir as workdir_lib
from cifar_jax.errors import TrainingError
from cifar_jax.parallel import to_global
from cifar_jax.steps import TrainState, all_finite, state_sha256

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
    workdir_lib.write_bytes_atomic(path, "".join(kept).encode("utf-8"))


class LossMonitor:
    """Accumulates train metrics and stops (or skips) on a non-finite loss.

    Each step's loss is checked on the host one step late, while the next step already
    runs on the device, so the check costs no pipeline stall. ``nonfinite_loss="stop"``
    raises TrainingError naming the step; ``"skip"`` counts the step (the train step has
    already left the state unchanged) and leaves it out of the averages.
    """

    def __init__(self, config: Any, manager: Any):
        self.config = config
        self.directory = str(manager.directory)
        self.skipped = 0
        self._pending: tuple[int, metrics.TrainMetrics] | None = None
        self._totals: metrics.TrainMetrics | None = None

    def add(self, step: int, step_metrics: metrics.TrainMetrics) -> None:
        self.flush()
        self._pending = (step, step_metrics)

    def flush(self) -> None:
        """Checks the pending step (waits for it) and adds it to the totals."""
        if self._pending is None:
            return
        step, m = self._pending
        self._pending = None
        loss_sum = float(m.loss.total)
        if not math.isfinite(loss_sum):
            if self.config.nonfinite_loss != "skip":
                raise TrainingError(
                    f"the training loss is {loss_sum} at step {step}. Lower learning_rate "
                    f"(now {self.config.learning_rate}), set grad_clip_norm, or check the data; "
                    "--config.nonfinite_loss=skip skips such steps instead. Checkpoints up to "
                    f"the last good one are kept in {self.directory}; rerun to resume from it."
                )
            self.skipped += 1
            logging.warning("Step %d skipped: non-finite loss %s.", step, loss_sum)
            return
        self._totals = m if self._totals is None else self._totals.merge(m)

    def pop_scalars(self) -> dict[str, float]:
        """The averages since the last call (NaN if every step was skipped)."""
        self.flush()
        totals, self._totals = self._totals, None
        if totals is None:
            return {"loss": float("nan"), "accuracy": float("nan")}
        return {k: float(v) for k, v in totals.compute().items()}


def save_checkpoint(manager: Any, step: int, state: TrainState, data_state: dict) -> None:
    """Saves ``state`` unless it holds NaN/Inf, so a bad state never replaces a good one."""
    if not bool(all_finite((state.params, state.batch_stats))):
        raise TrainingError(
            f"the parameters hold NaN or Inf after step {step}; not saving them. Lower "
            "learning_rate or set grad_clip_norm. The last good checkpoint is kept in "
            f"{manager.directory}; rerun to resume from it."
        )
    holds.hold("save", step)  # tests: a run killed or starved of disk at this save
    kept = f"Complete checkpoints already saved ({sorted(manager.all_steps())}) are kept."
    # The machine shape that wrote it, so a resume on another one can say so.
    data_state = {**data_state, **_run_shape()}
    with workdir_lib.write_errors(f"checkpoint {step}", str(manager.directory), kept):
        checkpoint.save(manager, step, state, data_state)


def _run_shape() -> dict[str, int]:
    return {"num_devices": jax.device_count(), "num_processes": jax.process_count()}


def resume(
    manager: Any, state: TrainState, train_iter: Any, workdir: str, config: Any
) -> TrainState:
    """The newest readable checkpoint's state (``state`` itself if there is none).

    Also moves the data iterator to the checkpoint. It writes nothing: the log lines
    written after the checkpoint are dropped once this run is accepted (:class:`Segment`).
    """
    changed = checkpoint.config_differences(workdir, config)
    hint = ""
    if changed:
        hint = f"The config differs from this workdir's config.json in: {'; '.join(changed)}."
    restored = checkpoint.restore_latest(manager, state, hint=hint)
    if restored is None:
        return state
    step, state, data_state = restored
    saved_shape = {k: data_state.pop(k) for k in _run_shape() if k in data_state}
    if data_state.get("next_index") != step:
        raise checkpoint.CheckpointError(
            f"checkpoint {step} in {manager.directory} holds a data iterator at "
            f"{data_state.get('next_index')}, not at its step; move that checkpoint away."
        )
    train_iter.set_state(data_state)
    if changed:
        logging.warning("Resuming with a config that differs from the run's: %s", changed)
    _console(f"Resumed from checkpoint at step {step} in {manager.directory}.")
    if saved_shape and saved_shape != _run_shape():
        # Elastic resume: the parameters are replicated and batch t is a function of
        # (seed, t) alone, so the run goes on with the same data order. Only the order in
        # which per-device partial sums are added changes, so the numbers match an
        # uninterrupted run to float rounding, not bit for bit.
        _console(
            f"The machine shape changed: checkpoint {step} was written with "
            f"{saved_shape.get('num_devices')} device(s) in {saved_shape.get('num_processes')} "
            f"process(es), this run has {jax.device_count()} in {jax.process_count()}. Same "
            "global batch and data order; results match an uninterrupted run up to float "
            "rounding (not bitwise: sums over the batch are split differently)."
        )
    return state


# --------------------------------------------------------------------------- the run


@contextlib.contextmanager
def hold_workdir(workdir: str, what: str = "run") -> Iterator[workdir_lib.WorkdirLock | None]:
    """One writer per workdir (:class:`workdir_lib.WorkdirLock`): process 0 takes the lock,
    and in a multi-process run every process learns whether it got it, so all stop
    together (not at their next collective) when the workdir is in use. Yields the lock
    in process 0 (None in the others)."""
    lock = workdir_lib.WorkdirLock(workdir, what=what)
    error = None
    if jax.process_index() == 0:
        try:
            lock.acquire()
        except workdir_lib.WorkdirInUseError as e:
            error = e
    if jax.process_count() > 1:
        got = int(multihost_utils.broadcast_one_to_all(np.int32(error is None)))
        if not got and error is None:
            error = workdir_lib.WorkdirInUseError(
                f"process 0 found the workdir {workdir} in use by another run; its message "
                "names the process."
            )
    if error is not None:
        raise error
    if lock.warning:
        _console(lock.warning)
    try:
        yield lock if jax.process_index() == 0 else None
    finally:
        if jax.process_index() == 0:
            lock.release()


# Runs this process has started. The first counts its time from process start (the
# interpreter's start-up and imports are its cost); a later one, as sweep and reproduce
# train several in one process, from its own call: else its time record would include
# every run before it.
_runs_started = 0


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
    """Trains ``config`` in ``workdir`` (resuming if it holds checkpoints); returns results.

    The workdir is held for the whole run: a second run started on it stops at once."""
    global _runs_started
    origin = 0.0 if _runs_started == 0 else runtime.process_seconds()
    _runs_started += 1
    validation.validate_config(config)  # before any data is read (Python API callers too)
    workdir = workdir_lib.prepare(workdir)
    with hold_workdir(workdir) as lock:
        return _train_and_evaluate(config, workdir, lock, origin)


class PhaseClock:
    """Where a run's time goes, from its start to ``results.json``, for its ``time``
    record. The start (``origin``, seconds after process start) is the process start for
    a process's first run (:func:`runtime.process_seconds`: interpreter start-up and
    imports count) and the ``train_and_evaluate`` call for a later one.
    :meth:`end` closes a phase (the time since the previous phase ended); parts
    (:meth:`part`) are time spent inside a phase, given apart (checkpoint saves and
    validation inside training). :meth:`record` closes the run: ``wall_seconds`` from the
    start to now, every phase, ``other_seconds`` for what no phase names, so the phases
    add up to ``wall_seconds``, and ``origin`` saying which start it was."""

    PHASES = (
        "startup_seconds",  # start -> training code: imports (first run), flags, config, lock
        "data_seconds",  # reading and checking the data set
        "init_seconds",  # model, optimizer, state (whitening init), checkpoint restore
        "compile_seconds",  # the train step, compiled ahead of time
        "training_seconds",  # the loop: steps, validation, checkpoint saves
        "test_seconds",  # the final test evaluation (its first batch compiles)
        "tta_seconds",  # the test with test-time augmentation (compile included)
    )

    def __init__(self, origin: float = 0.0):
        self.origin = origin
        self._last = runtime.process_seconds()
        self.times: dict[str, float] = {"startup_seconds": self._last - origin}
        self.parts: dict[str, float] = {}

    def elapsed(self) -> float:
        """Seconds since the run's start."""
        return runtime.process_seconds() - self.origin

    def end(self, phase: str) -> None:
        now = runtime.process_seconds()
        self.times[phase] = self.times.get(phase, 0.0) + now - self._last
        self._last = now

    @contextlib.contextmanager
    def part(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.parts[name] = self.parts.get(name, 0.0) + time.perf_counter() - start

    def record(self) -> dict[str, Any]:
        wall = self.elapsed()
        phases = {name: self.times.get(name, 0.0) for name in self.PHASES}
        return {
            "origin": "process start" if self.origin == 0.0 else "train_and_evaluate call",
            "wall_seconds": wall,
            **phases,
            "other_seconds": wall - sum(phases.values()),
            # Inside training_seconds:
            "checkpoint_seconds": self.parts.get("checkpoint_seconds", 0.0),
            "validation_seconds": self.parts.get("validation_seconds", 0.0),
        }


class Segment:
    """What one invocation (a segment of the run) writes to its workdir, and when.

    A rerun in a workdir that holds a run (checkpoints, ``config.json`` or
    ``results.json``) is accepted only once it has saved its first checkpoint: until then
    it writes nothing there. ``config.json`` and ``inference.json`` (which ``evaluate``,
    ``export`` and ``load_run`` read), the metrics and TensorBoard logs (kept in memory
    meanwhile) and the removal of log lines past the resumed step all wait for
    :meth:`accept`. So a rerun that fails first (a NaN loss, a full disk, a kill, a lost
    lock, a config the checkpoint refuses) leaves every file of the good run as it was.
    (What it may clear first never described a good state: Orbax's half-written
    checkpoints, best checkpoints newer than the resumed state left by an interrupted run,
    and unreadable checkpoints, moved aside, not deleted.) ``config.json`` then describes
    the newest checkpoint's segment. A run in a new
    workdir is accepted at once. Before every checkpoint and results write,
    :meth:`check_lock` makes sure this run still holds the workdir.
    """

    def __init__(
        self, workdir: str, lock: workdir_lib.WorkdirLock | None, start_step: int, holds_run: bool
    ):
        self.workdir = workdir
        self.lock = lock
        self.start_step = start_step
        self.is_main = jax.process_index() == 0
        self.writer = metrics.DeferredWriter(workdir, enabled=self.is_main)
        self.accepted = False
        self._pending: list[tuple[str, Any]] = []
        self._holds_run = holds_run

    def write_json(self, name: str, values: Any) -> None:
        """Writes ``<workdir>/<name>`` now if accepted, else at :meth:`accept`."""
        self._pending.append((name, values))
        if self.accepted or not self._holds_run:
            self.accept()

    def accept(self) -> None:
        if self.is_main:
            if not self.accepted:
                _truncate_metrics_log(self.workdir, self.start_step)
            for name, values in self._pending:
                with workdir_lib.write_errors(name, self.workdir):
                    workdir_lib.write_json_atomic(os.path.join(self.workdir, name), values)
        self._pending = []
        self.writer.open()
        self.accepted = True

    def check_lock(self) -> None:
        """Stops (every process) with WorkdirLockLostError if process 0 lost the lock."""
        error = None
        if self.lock is not None:
            try:
                self.lock.verify()
            except workdir_lib.WorkdirLockLostError as e:
                error = e
        if jax.process_count() > 1:
            held = int(multihost_utils.broadcast_one_to_all(np.int32(error is None)))
            if not held and error is None:
                error = workdir_lib.WorkdirLockLostError(_LOST_ELSEWHERE)
        if error is not None:
            raise error


_LOST_ELSEWHERE = (
    "process 0 of this run lost the workdir lock to another process (its message says "
    "which); every process stops without writing another checkpoint or result."
)


def resolve_precision(
    config: ml_collections.ConfigDict, workdir: str
) -> tuple[ml_collections.ConfigDict, str | None]:
    """``config`` as this run computes it, and why it computes in float32 where
    ``half_precision_fallback`` turned bf16 off (None where nothing changed).

    With ``half_precision`` and ``half_precision_fallback``, a run on a CPU whose oneDNN
    has no AMX bf16 path computes in float32 (``kernels.half_precision_fallback_reason``:
    the platform of the devices it runs on, not the default backend). Decided once per run:
    a workdir whose ``config.json`` records a fallback run keeps the precision recorded
    there, so a run resumed on another machine does not change precision halfway."""
    if not (config.half_precision and config.half_precision_fallback):
        return config, None
    recorded = _recorded_config(workdir)
    if recorded.get("half_precision_fallback") and isinstance(recorded.get("half_precision"), bool):
        half = recorded["half_precision"]
        reason = None if half else "as recorded when this run started (its config.json)"
    else:
        reason = kernels.half_precision_fallback_reason(jax.devices()[0].platform)
        half = reason is None
    if half:
        return config, None
    resolved = copy.deepcopy(config)
    with resolved.unlocked():
        resolved.half_precision = False
        resolved.cpu_bf16_kernel_grads = False  # chooses between bf16 kernels; none run
    return resolved, reason


def _recorded_config(workdir: str) -> dict[str, Any]:
    """The workdir's ``config.json`` ({} if it has none or it cannot be read: the resume
    checks name that problem where it matters)."""
    try:
        with open(os.path.join(workdir, "config.json"), encoding="utf-8") as f:
            recorded = json.load(f)
    except (OSError, ValueError):
        return {}
    return recorded if isinstance(recorded, dict) else {}


def _train_and_evaluate(
    config: ml_collections.ConfigDict,
    workdir: str,
    lock: workdir_lib.WorkdirLock | None = None,
    origin: float = 0.0,
) -> dict[str, Any]:
    is_main = jax.process_index() == 0
    clock = PhaseClock(origin)  # where the run's time goes, for results.json
    runtime.git_commit()  # the code this process loaded, read now (cached for results.json)

    def data_loaded(dataset: data.CifarData, steps_per_epoch: int, total_steps: int) -> None:
        clock.end("data_seconds")
        if dataset.val is not None:  # checked against the data before anything is built
            tracking.check_schedule(config, steps_per_epoch, total_steps)
        _console(
            f"Data: {dataset.source}: {len(dataset.train)} train, "
            f"{len(dataset.val) if dataset.val is not None else 0} val, "
            f"{len(dataset.test)} test, {dataset.num_classes} classes. "
            f"{jax.device_count()} device(s) ({jax.devices()[0].platform}), "
            f"{jax.process_count()} process(es)."
        )

    # config.half_precision_fallback: the precision of this run, decided before anything
    # is built from it (the config saved, checkpointed and tested is the one that ran).
    config, fallback = resolve_precision(config, workdir)
    if fallback:
        _console(f"half_precision_fallback: computing in float32, {fallback}.")

    # The run, set up in one place: mesh and batch checks, data, run length, normalization,
    # model, schedule, optimizer, state and jitted steps (experiment.build).
    exp = experiment.build(config, on_data=data_loaded)
    dataset, mesh, state = exp.dataset, exp.mesh, exp.state
    steps_per_epoch, total_steps = exp.steps_per_epoch, exp.total_steps
    trainable_params = exp.trainable_params()
    _console(
        f"Model: {config.model}, {trainable_params:,} trainable params; convolutions: "
        f"{kernels.conv_backend()}; host memory: {runtime.host_allocator()}; process: "
        f"{runtime.process_setup()}."
    )
    # What runs the bf16 convs (logged, and recorded in results.json); on a CPU without
    # bf16 it says "SLOWER".
    precision_note = (
        kernels.half_precision_note(config.cpu_bf16_kernel_grads)[0]
        if config.half_precision
        else None
    )
    if precision_note:
        _console(
            f"half_precision: {precision_note}; params, optimizer state, "
            "BatchNorm statistics and the loss stay float32."
        )

    # Resume if the workdir holds checkpoints.
    manager = checkpoint.create_manager(workdir, config.keep_checkpoints)
    train_iter = exp.train_iterator()
    state = resume(manager, state, train_iter, workdir, config)
    start_step = int(state.step)
    results_path = os.path.join(workdir, "results.json")
    finished = start_step == total_steps or tracking.should_stop(state, config)
    # A run that config.target_accuracy stopped is finished before total_steps.
    if os.path.exists(results_path) and (finished or config.target_accuracy):
        with open(results_path, encoding="utf-8") as f:
            saved = json.load(f)
        if finished or saved.get("target_step") == start_step:
            _console(f"{workdir} holds a finished run; its results are in {results_path}.")
            manager.close()
            return saved

    best = checkpoint.BestCheckpoint(workdir, state)  # drops best checkpoints past the resume
    holds_run = start_step > 0 or any(
        os.path.exists(os.path.join(workdir, name)) for name in ("config.json", "results.json")
    )
    segment = Segment(workdir, lock, start_step, holds_run)
    writer = segment.writer
    if start_step == 0:
        writer.write_hparams(config.to_dict())
    segment.write_json("config.json", config.to_dict())
    # What classifying an image needs besides the weights: the workdir works without the
    # data set from here on (predict, export, the Python API).
    spec = inference.InferenceSpec.of_run(
        config, dataset.class_names, exp.mean, exp.std, dataset.source
    )
    segment.write_json(inference.SPEC_FILE, spec.to_json())

    # Compile ahead of time so compile time is measured apart from training.
    clock.end("init_seconds")
    compile_start = time.perf_counter()
    train_step = exp.train_step.lower(state, exp.example_batch()).compile()
    compile_seconds = time.perf_counter() - compile_start
    clock.end("compile_seconds")

    # Train.
    checkpoint_every = config.checkpoint_every_steps or steps_per_epoch
    progress = Progress(total_steps, steps_per_epoch, config.batch_size)
    monitor = LossMonitor(config, manager)
    paused_seconds = 0.0  # evaluation and checkpoint time, excluded from throughput
    steady_start = None  # after the first step: warm caches, excluded from throughput
    steady_images = 0
    validation_update = tracking.make_validation_update(config, exp.replicated)
    stopped_early = tracking.should_stop(state, config)  # resumed after stopping early
    target: dict[str, Any] | None = None  # config.target_accuracy, once reached
    last_step = start_step if stopped_early else total_steps
    loop_start = time.perf_counter()
    progress.reset_clock(start_step)
    multi = jax.process_count() > 1
    with preemption.StopRequest(mesh if multi else None, lock) as stop:
        for step in range(start_step + 1, last_step + 1):
            batch = to_global(next(train_iter), exp.batch_sharding)
            state, step_metrics = train_step(state, batch)
            holds.hold("step", step)  # tests: a signal, or a lost lock, at a known step
            stopping = stop.poll()  # agreed by every process
            if stop.lock_lost:
                writer.close()
                raise workdir_lib.WorkdirLockLostError(
                    lock.lost_message() if lock is not None and lock.lost else _LOST_ELSEWHERE
                )
            monitor.add(step, step_metrics)  # checks the previous step while this one runs
            if steady_start is None:
                jax.block_until_ready(state)
                steady_start = time.perf_counter()
            else:
                steady_images += config.batch_size

            if step % config.log_every_steps == 0 or step == total_steps:
                scalars = monitor.pop_scalars()
                lr = optim.learning_rate_at(exp.schedule, state.opt_state, step - 1)
                scalars["learning_rate"] = lr
                _console(progress.line(step, scalars))
                writer.write_scalars(
                    step, {"split": "train", **scalars, "epoch": step / steps_per_epoch}
                )

            pause_start = time.perf_counter()
            paused = False
            end_of_epoch = step % steps_per_epoch == 0
            epoch = step // steps_per_epoch
            if dataset.val is not None and end_of_epoch and epoch % config.eval_every_epochs == 0:
                with clock.part("validation_seconds"):
                    val = exp.evaluate(state, dataset.val)
                _console(
                    f"  val   epoch {epoch}: loss {val['loss']:.4f} | acc {val['accuracy']:.4f}"
                )
                writer.write_scalars(step, {"split": "val", **val, "epoch": step / steps_per_epoch})
                state = validation_update(state, val["loss"], val["accuracy"], step)
                if tracking.improved_at(state, step):
                    segment.check_lock()
                    with clock.part("checkpoint_seconds"):
                        best.save(step, state, train_iter.get_state())
                    segment.accept()
                stopped_early = tracking.should_stop(state, config)
                paused = True
            if config.target_accuracy and end_of_epoch:
                if not (dataset.val is not None and paused):  # no validation result this epoch
                    split = dataset.val if dataset.val is not None else dataset.test
                    with clock.part("validation_seconds"):
                        val = exp.evaluate(state, split)
                    paused = True
                if val["accuracy"] >= config.target_accuracy:
                    target = {
                        "target_accuracy": config.target_accuracy,
                        "target_split": "val" if dataset.val is not None else "test",
                        "target_step": step,
                        "target_epoch": epoch,
                        # From the run's start (time.origin): everything up to this
                        # evaluation's end.
                        "time_to_target_seconds": clock.elapsed(),
                        # Training steps alone (evaluations and checkpoint saves left out).
                        "time_to_target_train_seconds": pause_start - loop_start - paused_seconds,
                    }
                    _console(
                        f"Target accuracy {config.target_accuracy} reached after epoch {epoch} "
                        f"({target['target_split']} accuracy {val['accuracy']:.4f}), "
                        f"{target['time_to_target_train_seconds']:.1f} s of training, "
                        f"{target['time_to_target_seconds']:.1f} s since the run started."
                    )
                    stopped_early = True
            if step % checkpoint_every == 0 or step == total_steps or stopping or stopped_early:
                monitor.flush()  # never save a state whose loss went bad
                segment.check_lock()
                with clock.part("checkpoint_seconds"):
                    save_checkpoint(manager, step, state, train_iter.get_state())
                segment.accept()  # a rerun changes the workdir from its first checkpoint on
                writer.flush()
                paused = True
            if stopping:
                with workdir_lib.write_errors(f"checkpoint {step}", str(manager.directory)):
                    manager.wait_until_finished()
                writer.close()
                raise preemption.Preempted(
                    f"stopped by {stop.name()} after step {step}/{total_steps}; a checkpoint "
                    f"was saved in {manager.directory}. Rerun the same command to resume.",
                    stop.signum,
                )
            if paused:
                paused_seconds += time.perf_counter() - pause_start
                progress.reset_clock(step)
            if stopped_early:
                if target is None:
                    _console(
                        f"Early stopping after epoch {epoch}: no better {config.best_metric} "
                        f"in {config.early_stopping_patience} evaluations."
                    )
                break
    monitor.flush()

    jax.block_until_ready(state)
    train_seconds = time.perf_counter() - loop_start - paused_seconds
    steady_seconds = time.perf_counter() - (steady_start or loop_start) - paused_seconds
    with workdir_lib.write_errors("the last checkpoint", str(manager.directory)):
        with clock.part("checkpoint_seconds"):
            manager.wait_until_finished()
    clock.end("training_seconds")

    # Test, on the final or the best-validation state.
    final_step = int(state.step)
    tested = tracking.test_checkpoint(config)
    test_state = best.restore(state) if tested == "best" else state
    test_start = time.perf_counter()
    test = exp.evaluate(test_state, dataset.test)
    test_seconds = time.perf_counter() - test_start
    clock.end("test_seconds")
    _console(f"Test: loss {test['loss']:.4f} | accuracy {test['accuracy']:.4f}")
    writer.write_scalars(final_step, {"split": "test", **test})
    test_tta = None
    if config.tta != "none":  # test-time augmentation (cifar_jax/tta.py), reported apart
        tta_start = time.perf_counter()
        test_tta = exp.evaluate(test_state, dataset.test, exp.tta_eval_step(config.tta))
        test_tta["seconds"] = time.perf_counter() - tta_start  # compile included
        clock.end("tta_seconds")
        _console(
            f"Test with TTA {config.tta}: loss {test_tta['loss']:.4f} | "
            f"accuracy {test_tta['accuracy']:.4f}"
        )
    writer.close()

    results = {
        "test_accuracy": test["accuracy"],
        "test_loss": test["loss"],
        "trainable_params": trainable_params,
        "epochs": final_step / steps_per_epoch,
        "steps": final_step,
        "train_seconds": train_seconds,
        "train_images_per_second": steady_images / steady_seconds if steady_images else None,
        "compile_seconds": compile_seconds,
        # The final test evaluation (its first batch compiles the eval step).
        "test_seconds": test_seconds,
        "resumed_from_step": start_step,
        "skipped_nonfinite_steps": monitor.skipped,
        "seed": config.seed,
        "state_sha256": state_sha256(state),
        "num_devices": jax.device_count(),
        "num_processes": jax.process_count(),
        "platform": jax.devices()[0].platform,
        # What made this number: device, CPU model and ISA, code version.
        "device_kind": jax.devices()[0].device_kind,
        "cpu": runtime.cpu_description(),
        "convolutions": kernels.conv_backend(),
        "half_precision": precision_note,
        "half_precision_fallback": fallback,  # why bf16 was asked for but float32 ran
        "commit": runtime.git_commit(),
        "dataset_source": dataset.source,
        "data_files": dataset.files,  # what the files hold: complete, a class cut, a subset
        "train_examples": len(dataset.train),
        "test_examples": len(dataset.test),
        **tracking.results(state, config, tested),
        "config": config.to_dict(),
    }
    if test_tta is not None:
        results["test_accuracy_tta"] = test_tta["accuracy"]
        results["test_loss_tta"] = test_tta["loss"]
        results["test_tta_seconds"] = test_tta["seconds"]
    if config.target_accuracy:
        results["target_reached"] = target is not None
        results.update(target or {"target_accuracy": config.target_accuracy})
    results["time"] = clock.record()
    segment.check_lock()
    if is_main:
        with workdir_lib.write_errors("results.json", workdir):
            workdir_lib.write_json_atomic(results_path, results)
    manager.close()
    best.close()
    return results
