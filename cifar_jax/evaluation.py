"""Evaluate a trained run on its test split: every metric the seed reports use.

    python -m cifar_jax evaluate --workdir=runs/lenet [--checkpoint=best|latest|STEP]
        [--tta=none|flip|flip_translate|airbench] [--split=test|val] [--data_dir=DIR]

Writes ``<workdir>/eval/metrics.json`` (``metrics_<split>.json`` for another split) with
accuracy, loss, top-k accuracy, per-class accuracy / precision / recall / F1 and their
macro and weighted averages, the confusion matrix, the mean confidence of correct and of
wrong predictions, the expected calibration error (15 bins), and with ``--tta`` the
accuracy and loss of the test-time-augmented predictions; it also prints a summary.

The predictions themselves (softmax probabilities of every image) are kept next to it in
``eval/predictions_<split>_<tta>.npz``, tagged with the sha256 of the evaluated weights,
so ``report`` and ``compare`` reuse them instead of evaluating again.
"""

from __future__ import annotations

import io
import os
from typing import Any

import numpy as np

from cifar_jax import classification, runs, runtime, tta
from cifar_jax import workdir as workdir_lib
from cifar_jax.errors import ConfigError

SPLITS = ("test", "val")


def eval_dir(workdir: str) -> str:
    return os.path.join(workdir, "eval")


def get_split(run: runs.LoadedRun, split: str):
    if split == "test":
        return run.dataset.test
    if split == "val":
        if run.dataset.val is None:
            raise ConfigError(
                f"the run in {run.workdir} has no validation split (val_examples=0); use "
                "--split=test."
            )
        return run.dataset.val
    raise ConfigError(f"--split={split!r} is not known; use one of {list(SPLITS)}.")


def _cache_path(run: runs.LoadedRun, split: str, mode: str) -> str:
    return os.path.join(eval_dir(run.workdir), f"predictions_{split}_{mode}.npz")


def predictions(
    run: runs.LoadedRun, split: str = "test", mode: str = "none", cache: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """``(probs (N, C), labels (N,))`` of a split, reusing the saved ones when they match.

    Saved predictions are reused only if they were made from exactly these weights (same
    ``state_sha256``), for the same labels.
    """
    import jax

    labels = np.asarray(get_split(run, split).labels)
    path = _cache_path(run, split, mode)
    sha = run.state_sha256()
    if cache and os.path.exists(path):
        try:
            with np.load(path) as saved:
                if (
                    str(saved["state_sha256"]) == sha
                    and np.array_equal(saved["labels"], labels)
                    and saved["probs"].shape == (labels.size, run.num_classes)
                ):
                    return saved["probs"], labels
        except (OSError, ValueError, KeyError):
            pass  # unreadable or older format: evaluate again and overwrite it
    probs = runs.predict_probs(run, get_split(run, split), mode)
    if cache and jax.process_index() == 0:
        os.makedirs(eval_dir(run.workdir), exist_ok=True)
        buffer = io.BytesIO()
        np.savez_compressed(
            buffer, probs=probs, labels=labels, state_sha256=np.asarray(sha), step=run.step
        )
        workdir_lib.write_bytes_atomic(path, buffer.getvalue())
    return probs, labels


def evaluate_run(
    run: runs.LoadedRun, mode: str = "none", split: str = "test", cache: bool = True
) -> dict[str, Any]:
    """The metrics of ``eval/metrics.json`` for a loaded run (no file is written)."""

    tta.check_mode(mode)
    probs, labels = predictions(run, split, "none", cache)
    out: dict[str, Any] = {
        "workdir": run.workdir,
        "checkpoint": run.checkpoint,
        "checkpoint_path": run.checkpoint_path,
        "step": run.step,
        "split": split,
        "model": run.config.model,
        "dataset": run.config.dataset,
        "dataset_source": run.dataset.source,
        "trainable_params": run.trainable_params,
        "state_sha256": run.state_sha256(),
        **classification.summarize(probs, labels, run.class_names),
        "tta": mode,
        # What made the numbers, as results.json records it: a committed evaluation
        # (docs/reproduction/first20/*/eval_latest.json) backs a table.
        "commit": runtime.git_commit(),
        "cpu": runtime.cpu_description(),
    }
    if mode != "none":
        tta_probs, _ = predictions(run, split, mode, cache)
        out["tta_accuracy"] = float(np.mean(tta_probs.argmax(-1) == labels))
        out["tta_loss"] = classification.nll(tta_probs, labels)
        out["tta_metrics"] = {
            k: v
            for k, v in classification.summarize(tta_probs, labels, run.class_names).items()
            if k not in ("per_class", "class_names", "confusion_matrix")
        }
        out["tta_metrics"]["num_views"] = tta.num_views(mode)
    return out


def metrics_path(workdir: str, split: str = "test") -> str:
    name = "metrics.json" if split == "test" else f"metrics_{split}.json"
    return os.path.join(eval_dir(workdir), name)


def write_json(path: str, obj: Any) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    workdir_lib.write_json_atomic(path, obj)


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.2f}%"


def format_summary(m: dict[str, Any]) -> str:
    """A human-readable summary of :func:`evaluate_run`'s metrics."""
    topk = ", ".join(f"top-{k} {_pct(v)}" for k, v in m["top_k_accuracy"].items())
    lines = [
        f"{m['workdir']} ({m['model']}, {m['trainable_params']:,} params), checkpoint "
        f"{m['checkpoint']} (step {m['step']}), {m['split']} split: {m['num_examples']:,} images",
        f"  accuracy {_pct(m['accuracy'])} | loss {m['loss']:.4f} | {topk}",
        f"  macro    precision {m['macro']['precision']:.4f} | recall "
        f"{m['macro']['recall']:.4f} | F1 {m['macro']['f1']:.4f}",
        f"  weighted precision {m['weighted']['precision']:.4f} | recall "
        f"{m['weighted']['recall']:.4f} | F1 {m['weighted']['f1']:.4f}",
        f"  mean confidence: correct {_pct(m['mean_confidence_correct'])}, wrong "
        f"{_pct(m['mean_confidence_wrong'])} | ECE ({m['ece_bins']} bins) {m['ece']:.4f}",
    ]
    if m.get("tta", "none") != "none":
        lines.append(
            f"  TTA {m['tta']} ({m['tta_metrics']['num_views']} views): accuracy "
            f"{_pct(m['tta_accuracy'])} | loss {m['tta_loss']:.4f}"
        )
    width = max(len(n) for n in m["class_names"])
    lines.append(f"  {'class'.ljust(width)}  accuracy  precision  recall      F1  support")
    for name, c in m["per_class"].items():
        lines.append(
            f"  {name.ljust(width)}  {c['accuracy']:8.4f}  {c['precision']:9.4f}  "
            f"{c['recall']:6.4f}  {c['f1']:6.4f}  {c['support']:7d}"
        )
    return "\n".join(lines)
