"""Load a finished (or running) training run back from its workdir.

    run = load_run("runs/lenet", checkpoint="latest")   # or "best", or a step number
    run.predict(images).probs                            # (N, C) softmax, sharded + jitted
    probs = predict_probs(run, run.dataset.test)          # a whole split, same step

A workdir holds ``config.json`` (the resolved config), ``inference.json`` (what
classifying an image needs: class names, normalization, ...; :mod:`cifar_jax.inference`),
``results.json`` (once finished), ``metrics.jsonl`` and the Orbax checkpoints under
``checkpoints/<step>/`` (and the best-validation one under ``best/<step>/`` when the run
keeps one). :func:`load_run` rebuilds the model and the train state from them without
reading the data set; ``run.dataset`` reads it on first use (evaluate, report). Runs made
before ``inference.json`` existed read the data set at once for their class names and
normalization, as before. Every problem is a :class:`~cifar_jax.errors.CifarJaxError`
that names what is missing and what to do.

:func:`predict_probs` is the one evaluation path every command uses (evaluate, report,
compare, predict, ``LoadedRun.predict``): the padded, masked eval pipeline and a step
jitted over the same ``data`` mesh as training, so every image is seen exactly once and a
picture given to ``predict`` gets exactly the probabilities ``evaluate`` computes for the
same pixels.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import flax
import ml_collections
import numpy as np
from absl import logging

from cifar_jax import checkpoint as ckpt
from cifar_jax import config as config_lib
from cifar_jax import inference, parallel, steps
from cifar_jax.errors import CheckpointError, CifarJaxError, ConfigError
from cifar_jax.inference.spec import load_data  # the data set, checked against the spec

CHECKPOINT_NAMES = ("latest", "best")


# ------------------------------------------------------------------------ the config


def require_workdir(workdir: str | None) -> str:
    """The absolute workdir, or a clear error if it is not a training workdir."""
    if not workdir:
        raise CifarJaxError("no --workdir given; pass the workdir of a training run.")
    path = os.path.abspath(os.path.expanduser(workdir))
    if not os.path.isdir(path):
        raise CifarJaxError(
            f"workdir {path} does not exist. Pass the --workdir a training run wrote "
            "(python -m cifar_jax.main --config=... --workdir=DIR)."
        )
    return path


def config_from_dict(values: dict[str, Any], where: str = "config") -> ml_collections.ConfigDict:
    """The base config updated with ``values`` (JSON lists become the base's tuples).

    Fields this version of cifar_jax does not know are skipped with a warning, and fields
    it added since the run was made keep their defaults, so older runs stay loadable.
    """
    config = config_lib.base_config()
    skipped = []
    for key, value in values.items():
        if key not in config:
            skipped.append(key)
            continue
        if isinstance(config[key], tuple) and isinstance(value, list):
            value = tuple(tuple(v) if isinstance(v, list) else v for v in value)
        try:
            config[key] = value
        except (TypeError, ValueError) as e:
            raise ConfigError(
                f"{where}: field {key!r} holds {value!r}, which does not fit the field's type "
                f"({type(config[key]).__name__}): {e}. Fix the value in {where}."
            ) from e
    if skipped:
        logging.warning("%s: ignoring fields this version does not know: %s", where, skipped)
    return config


def read_config(workdir: str) -> ml_collections.ConfigDict:
    """The resolved config a run saved in ``<workdir>/config.json``."""
    workdir = require_workdir(workdir)
    path = os.path.join(workdir, "config.json")
    if not os.path.exists(path):
        raise CifarJaxError(
            f"{workdir} has no config.json, so it is not a cifar_jax training workdir (or its "
            "run stopped before writing it). Pass the --workdir of a training run."
        )
    from cifar_jax import workdir as workdir_lib

    fix = "Restore the file, or copy the 'config' entry of results.json into it."
    return config_from_dict(workdir_lib.read_json_object(path, fix), path)


def read_results(workdir: str) -> dict[str, Any] | None:
    """``results.json`` of a finished run, or None if the run has not finished."""
    path = os.path.join(require_workdir(workdir), "results.json")
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def read_metrics(workdir: str) -> list[dict[str, Any]]:
    """The records of ``metrics.jsonl`` ([] if the run wrote none)."""
    from cifar_jax import metrics

    path = os.path.join(require_workdir(workdir), "metrics.jsonl")
    if not os.path.exists(path):
        return []
    return metrics.read_jsonl(path)


def parse_checkpoint(value: str | int) -> str | int:
    """``"latest"``, ``"best"`` or a step number (from a flag value)."""
    if isinstance(value, int):
        return value
    text = str(value).strip().lower()
    if text in CHECKPOINT_NAMES:
        return text
    if text.isdigit():
        return int(text)
    raise ConfigError(
        f"--checkpoint={value!r} is not known; use latest, best or a step number "
        "(the folder names under <workdir>/checkpoints/)."
    )


# ------------------------------------------------------------------- checkpoints


def _steps(workdir: str, name: str) -> list[int]:
    """Committed checkpoint steps under ``<workdir>/<name>`` (no Orbax needed)."""
    root = ckpt.checkpoint_dir(workdir, name)
    if not os.path.isdir(root):
        return []
    steps = []
    for entry in os.listdir(root):
        if entry.isdigit() and os.path.isdir(os.path.join(root, entry)):
            steps.append(int(entry))
    return sorted(steps)


def find_checkpoint(workdir: str, checkpoint: str | int = "latest") -> tuple[str, int]:
    """``(folder name, step)`` of the requested checkpoint, or a CheckpointError."""
    workdir = require_workdir(workdir)
    checkpoint = parse_checkpoint(checkpoint)
    latest_steps = _steps(workdir, ckpt.LATEST)
    best_steps = _steps(workdir, ckpt.BEST)
    if checkpoint == "latest":
        if not latest_steps:
            raise CheckpointError(
                f"no checkpoint in {ckpt.checkpoint_dir(workdir)}: the run has not saved one "
                "yet (it saves every checkpoint_every_steps steps, else at the end of each "
                "epoch). Let the training run reach its first checkpoint, or pass the "
                "workdir of a finished run."
            )
        return ckpt.LATEST, latest_steps[-1]
    if checkpoint == "best":
        if not best_steps:
            raise CheckpointError(
                f"no best checkpoint in {ckpt.checkpoint_dir(workdir, ckpt.BEST)}: the run "
                "did not keep one (it is kept only by runs that evaluate a validation split, "
                "--config.val_examples > 0). Use --checkpoint=latest."
            )
        return ckpt.BEST, best_steps[-1]
    if checkpoint in latest_steps:
        return ckpt.LATEST, checkpoint
    if checkpoint in best_steps:
        return ckpt.BEST, checkpoint
    have = ", ".join(
        f"{name}/: {steps}"
        for name, steps in ((ckpt.LATEST, latest_steps), (ckpt.BEST, best_steps))
    )
    raise CheckpointError(
        f"no checkpoint at step {checkpoint} in {workdir} (available: {have}). Older "
        "checkpoints are deleted as new ones are saved (keep_checkpoints); pass one of "
        "these steps, latest or best."
    )


# ---------------------------------------------------------------------- the run


@dataclasses.dataclass
class LoadedRun:
    """A run restored from its workdir: predict with it, evaluate it, or take its Flax
    parts (``model``, ``variables``, ``config``)."""

    workdir: str
    config: ml_collections.ConfigDict
    model: Any  # flax.linen.Module
    state: Any  # EvalState (step, params, batch_stats), replicated over ``mesh``
    step: int
    checkpoint: str  # "latest", "best" or "step N" (what was asked for)
    checkpoint_path: str
    spec: inference.InferenceSpec  # class names, normalization, ... (inference.json)
    mean: np.ndarray
    std: np.ndarray
    mesh: Any  # jax.sharding.Mesh
    results: dict[str, Any] | None
    # The run's jitted eval step (state, padded batch) -> EvalMetrics, as training built it.
    eval_step: Any = None
    # The data set, read on first use of ``dataset`` (runs without inference.json: at load).
    _dataset: Any = dataclasses.field(default=None, repr=False)
    _compiled: dict[str, Any] = dataclasses.field(default_factory=dict, repr=False)

    @property
    def dataset(self) -> Any:
        """The run's data set (``data.CifarData``), read on first use from the config's
        ``data_dir`` (or load_run's ``data_dir``); its classes must be the run's."""
        if self._dataset is None:
            self._dataset = load_data(self.config, self.spec)
        return self._dataset

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(self.spec.class_names)

    @property
    def num_classes(self) -> int:
        return self.spec.num_classes

    @property
    def variables(self) -> dict[str, Any]:
        """``{"params", "batch_stats"}`` for ``model.apply(run.variables, x, train=False)``
        (``x``: images normalized with ``run.mean`` / ``run.std``)."""
        return self.state.variables()

    @property
    def name(self) -> str:
        return os.path.basename(self.workdir.rstrip(os.sep))

    @property
    def eval_batch_size(self) -> int:
        return config_lib.eval_batch_size(self.config)

    @property
    def trainable_params(self) -> int:
        from cifar_jax import models

        return models.count_trainable_params(self.state.params)

    def replicated(self):
        from jax.sharding import NamedSharding
        from jax.sharding import PartitionSpec as P

        return NamedSharding(self.mesh, P())

    def batch_sharding(self):
        from jax.sharding import NamedSharding
        from jax.sharding import PartitionSpec as P

        return NamedSharding(self.mesh, P("data"))

    def predict_step(self, mode: str = "none"):
        """The jitted ``(state, batch) -> probs`` step for a TTA mode (compiled once)."""
        import jax

        from cifar_jax import tta

        tta.check_mode(mode)
        if mode not in self._compiled:
            self._compiled[mode] = jax.jit(
                parallel.traced_on(
                    self.mesh, tta.make_predict_step(self.model, self.mean, self.std, mode)
                ),
                in_shardings=(self.replicated(), self.batch_sharding()),
                out_shardings=self.replicated(),
            )
        return self._compiled[mode]

    def state_sha256(self) -> str:
        return steps.state_sha256(self.state)

    def predict(
        self, images: Any, *, tta: str = "none", batch_size: int | None = None
    ) -> inference.Predictions:
        """Probabilities and class names of ``images``: a uint8 ``(N, 32, 32, 3)`` array or
        image file path(s) (resized to 32x32 as ``python -m cifar_jax predict`` does), in
        batches of ``batch_size`` (default: the smallest the devices split that holds
        them, at most the run's eval batch) through the jitted, sharded predict step.
        ``tta``: a test-time augmentation mode (:mod:`cifar_jax.tta`)."""
        from cifar_jax.data import ArraySplit

        array = inference.as_images(images)
        split = ArraySplit(images=array, labels=np.zeros(len(array), np.int32))
        size = batch_size or small_batch_size(self, len(array))
        return inference.Predictions(predict_probs(self, split, tta, size), self.class_names)


@flax.struct.dataclass
class EvalState:
    """The part of a checkpointed ``steps.TrainState`` evaluation needs."""

    step: Any
    params: Any
    batch_stats: Any

    def variables(self) -> dict[str, Any]:
        return {"params": self.params, "batch_stats": self.batch_stats}


def load_run(
    workdir: str,
    checkpoint: str | int = "latest",
    data_dir: str | None = None,
    config: ml_collections.ConfigDict | None = None,
) -> LoadedRun:
    """Restores the run in ``workdir`` at ``checkpoint`` ("latest", "best" or a step).

    Only the step, the parameters and the BatchNorm statistics are read (not the
    optimizer state), so any checkpoint of the same model loads whatever else the train
    state holds. The class names and normalization come from ``inference.json``, so no
    data set is read until ``run.dataset`` is used; ``data_dir`` replaces the run's
    ``data_dir`` for that (when the data moved). ``config``, if given, is used instead of
    reading ``config.json`` again.
    """
    import jax

    from cifar_jax import experiment, models
    from cifar_jax.data import pipeline

    workdir = require_workdir(workdir)
    config = read_config(workdir) if config is None else config
    checkpoint = parse_checkpoint(checkpoint)
    folder, step = find_checkpoint(workdir, checkpoint)  # before the (slower) data loading
    if data_dir:
        config.data_dir = data_dir
    spec = inference.read_spec(workdir)
    dataset = None
    if spec is None:
        logging.warning(
            "%s has no %s (the run predates it): reading the data set for the class names "
            "and normalization, as before. Run python -m cifar_jax evaluate on it once where "
            "the data is to write the file; the run then needs no data to predict.",
            workdir,
            inference.SPEC_FILE,
        )
        dataset = load_data(config, None)
        mean, std = pipeline.normalization_stats(config, dataset.mean, dataset.std)
        spec = inference.InferenceSpec.of_run(
            config, dataset.class_names, mean, std, dataset.source
        )
    mean, std = np.asarray(spec.mean, np.float32), np.asarray(spec.std, np.float32)
    # The run's model, abstract state (the restore target) and eval step, without data.
    exp = experiment.build_abstract(config, spec.num_classes, mean=mean, std=std)
    model, mesh = exp.model, exp.mesh
    run = LoadedRun(
        workdir=workdir,
        config=config,
        model=model,
        state=None,
        step=step,
        checkpoint=checkpoint if isinstance(checkpoint, str) else f"step {checkpoint}",
        checkpoint_path=os.path.join(ckpt.checkpoint_dir(workdir, folder), str(step)),
        spec=spec,
        mean=mean,
        std=std,
        mesh=mesh,
        results=read_results(workdir),
        eval_step=exp.eval_step,
        _dataset=dataset,
    )
    target = {
        "params": exp.state.params,
        "batch_stats": exp.state.batch_stats,
        "step": exp.state.step,
    }
    has_stats = bool(jax.tree.leaves(target["batch_stats"]))
    if not has_stats:
        del target["batch_stats"]  # an empty dict is stored as one leaf, not a tree
    config_path = os.path.join(workdir, "config.json")
    what = (
        f"the model of {config_path} (model={config.model!r}, "
        f"{models.count_trainable_params(exp.state.params):,} params)"
    )
    fix = (
        "The checkpoint was written by a different model or config (was config.json "
        "edited, or checkpoints copied from another run?). Restore the run's own "
        "config.json, or pick another checkpoint with --checkpoint."
    )
    try:
        on_disk = ckpt.stored_state_tree(run.checkpoint_path)
    except Exception as e:  # noqa: BLE001 - any failure means the checkpoint is unreadable
        raise CheckpointError(
            f"checkpoint {run.checkpoint_path} cannot be read ({type(e).__name__}: "
            f"{str(e)[:300]}). It is damaged or incomplete; pick another one with "
            "--checkpoint (latest, best or a step number)."
        ) from e
    differences = []
    for name in ("params", "batch_stats"):
        stored = on_disk.get(name, {}) if isinstance(on_disk, dict) else {}
        stored = stored if isinstance(stored, dict) else {}
        differences += ckpt.structure_differences({name: stored}, {name: target.get(name, {})})
    if differences:
        shown = "\n  ".join(differences[:8])
        more = f"\n  ... and {len(differences) - 8} more" if len(differences) > 8 else ""
        raise CheckpointError(
            f"checkpoint {run.checkpoint_path} does not fit {what}:\n  {shown}{more}\n{fix}"
        )
    with ckpt.read_only_manager(workdir, folder) as manager:
        try:
            restored = ckpt.restore_part(manager, step, target)
        except Exception as e:  # noqa: BLE001 - Orbax raises many types; all mean "cannot use it"
            first = str(e).strip().splitlines()[0][:400] if str(e).strip() else ""
            raise CheckpointError(
                f"checkpoint {run.checkpoint_path} cannot be restored into {what}: "
                f"{type(e).__name__}: {first}\nIt may be damaged. {fix}"
            ) from e
    run.state = EvalState(
        step=restored["step"],
        params=restored["params"],
        batch_stats=restored["batch_stats"] if has_stats else {},
    )
    jax.block_until_ready(run.state)
    return run


def write_missing_spec(run: LoadedRun) -> str | None:
    """Writes ``inference.json`` for a run made before runs wrote one (its spec was built
    from the data set at load), so it needs no data from then on; the path, or None if
    the run has one already. Only process 0 writes."""
    import jax

    if jax.process_index() != 0 or os.path.exists(inference.spec_path(run.workdir)):
        return None
    return inference.write_spec(run.workdir, run.spec)


# ------------------------------------------------------------------ predictions


def predict_probs(
    run: LoadedRun, split: Any, mode: str = "none", batch_size: int | None = None
) -> np.ndarray:
    """Softmax probabilities (N, C) for every example of ``split`` exactly once, in order.

    ``split`` is a :class:`cifar_jax.data.ArraySplit`; batches go through the padded,
    masked eval pipeline and a step jitted and sharded like training. ``mode`` is a TTA
    mode (see :mod:`cifar_jax.tta`).
    """
    batch_size = batch_size or run.eval_batch_size
    parallel.check_batch_size(batch_size, run.mesh, "eval_batch_size")
    step = run.predict_step(mode)
    out = []
    for batch in steps.eval_batches(split, batch_size, run.batch_sharding()):
        probs = step(run.state, batch)
        out.append(np.asarray(probs.addressable_data(0), np.float32))
    if not out:
        return np.zeros((0, run.num_classes), np.float32)
    return np.concatenate(out)[: len(split)]


def small_batch_size(run: LoadedRun, n: int) -> int:
    """The smallest batch holding ``n`` images that the devices split evenly (<= eval size)."""
    devices = run.mesh.devices.size
    size = -(-max(n, 1) // devices) * devices
    return min(size, max(devices, run.eval_batch_size))


__all__ = [
    "CHECKPOINT_NAMES",
    "EvalState",
    "LoadedRun",
    "config_from_dict",
    "find_checkpoint",
    "load_data",
    "load_run",
    "parse_checkpoint",
    "predict_probs",
    "read_config",
    "read_metrics",
    "read_results",
    "require_workdir",
    "small_batch_size",
    "write_missing_spec",
]
