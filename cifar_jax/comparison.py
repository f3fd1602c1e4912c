"""Compare several runs side by side (report 003, Table 4 and Figs 11-13).

    python -m cifar_jax compare runs/lenet runs/resnet ... [--out=compare]
        [--names=a,b,...] [--checkpoint=latest|best] [--confusion=true] [--data_dir=DIR]

Prints a markdown table (run, model, trainable params, test accuracy and loss, best
validation accuracy, epochs, training time, throughput) and writes into ``--out``
(default ``./compare``):

* ``compare.md``: the table and the figures below;
* ``curves.png``: validation and train accuracy / loss of every run against epochs;
* ``accuracy.png``: test accuracy per run and accuracy against parameter count;
* ``confusion_matrices.png``: the row-normalized test confusion matrix of every run
  (runs with different class sets get one figure per class set); needs each run's
  checkpoint and data, reuses ``eval/predictions_test_none.npz`` when it matches.
  ``--confusion=false`` skips it (and any evaluation).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from cifar_jax import runs
from cifar_jax.errors import CheckpointError, CifarJaxError

COLUMNS = (
    ("name", "run"),
    ("model", "model"),
    ("trainable_params", "params"),
    ("test_accuracy", "test acc"),
    ("test_loss", "test loss"),
    ("best_val_accuracy", "best val acc"),
    ("epochs", "epochs"),
    ("train_seconds", "train time"),
    ("train_images_per_second", "img/s"),
)


def run_names(workdirs: Sequence[str]) -> list[str]:
    """Folder names, or paths below the common folder where folder names repeat."""
    paths = [os.path.abspath(w).rstrip(os.sep) for w in workdirs]
    names = [os.path.basename(p) for p in paths]
    if len(set(names)) == len(names):
        return names
    common = os.path.commonpath(paths)
    if common in paths:  # one run inside another, or the same workdir twice
        common = os.path.dirname(common)
    names = [os.path.relpath(p, common) for p in paths]
    seen: dict[str, int] = {}
    for i, name in enumerate(names):  # the same workdir given twice
        seen[name] = seen.get(name, 0) + 1
        if seen[name] > 1:
            names[i] = f"{name} ({seen[name]})"
    return names


def summarize_run(workdir: str, name: str) -> dict[str, Any]:
    """One table row from a workdir's results.json, config.json and metrics.jsonl."""
    from cifar_jax import model_summary, plots

    config = runs.read_config(workdir)
    results = runs.read_results(workdir) or {}
    records = runs.read_metrics(workdir)
    _, val_acc = plots.split_series(records, "val", "accuracy")
    params = results.get("trainable_params")
    if params is None:
        try:
            params = model_summary.trainable_param_count(config)
        except CifarJaxError:
            params = None
    return {
        "name": name,
        "workdir": os.path.abspath(workdir),
        "model": config.model,
        "dataset": config.dataset,
        "trainable_params": params,
        "test_accuracy": results.get("test_accuracy"),
        "test_loss": results.get("test_loss"),
        "test_accuracy_tta": results.get("test_accuracy_tta"),
        "best_val_accuracy": float(val_acc.max()) if val_acc.size else None,
        "epochs": results.get("epochs"),
        "train_seconds": results.get("train_seconds"),
        "train_images_per_second": results.get("train_images_per_second"),
        "finished": bool(results),
        "records": records,
    }


def _format(key: str, value: Any) -> str:
    if value is None:
        return "-"
    if key in ("test_accuracy", "best_val_accuracy", "test_accuracy_tta"):
        return f"{100 * value:.2f}%"
    if key == "test_loss":
        return f"{value:.4f}"
    if key == "trainable_params":
        return f"{int(value):,}"
    if key == "epochs":
        return f"{value:g}"
    if key == "train_seconds":
        s = int(round(value))
        return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"
    if key == "train_images_per_second":
        return f"{value:,.0f}"
    return str(value)


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
    columns = list(COLUMNS)
    if any(r.get("test_accuracy_tta") is not None for r in rows):
        columns.insert(4, ("test_accuracy_tta", "test acc TTA"))
    lines = [
        "| " + " | ".join(h for _, h in columns) + " |",
        "|" + "|".join("---" if k in ("name", "model") else "---:" for k, _ in columns) + "|",
    ]
    for r in rows:
        cells = [_format(k, r.get(k)) for k, _ in columns]
        if not r.get("finished"):
            cells[0] += " (unfinished)"
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def confusion_matrices(
    rows: Sequence[dict[str, Any]], checkpoint: str | int, data_dir: str | None
) -> tuple[list[tuple[tuple[str, ...], dict[str, np.ndarray]]], list[str]]:
    """Test confusion matrices grouped by class set, and notes on runs left out."""
    from cifar_jax import classification, evaluation

    groups: dict[tuple[str, ...], dict[str, np.ndarray]] = {}
    notes = []
    for r in rows:
        try:
            run = runs.load_run(r["workdir"], checkpoint, data_dir)
        except CheckpointError as e:
            notes.append(f"{r['name']}: no confusion matrix ({str(e).splitlines()[0]})")
            continue
        probs, labels = evaluation.predictions(run, "test", "none")
        cm = classification.confusion_matrix(labels, probs.argmax(-1), run.num_classes)
        groups.setdefault(run.class_names, {})[r["name"]] = cm
    return list(groups.items()), notes


def compare(
    workdirs: Sequence[str],
    out_dir: str = "compare",
    names: Sequence[str] | None = None,
    confusion: bool = True,
    checkpoint: str | int = "latest",
    data_dir: str | None = None,
) -> tuple[str, str]:
    """Writes the comparison into ``out_dir``; returns ``(markdown table, compare.md path)``."""
    from cifar_jax import plots

    if not workdirs:
        raise CifarJaxError("no workdirs given; pass the workdirs of two or more runs.")
    for w in workdirs:
        runs.require_workdir(w)
    names = list(names) if names else run_names(workdirs)
    if len(names) != len(workdirs):
        raise CifarJaxError(
            f"--names has {len(names)} names for {len(workdirs)} workdirs; give one per workdir."
        )
    rows = [summarize_run(w, n) for w, n in zip(workdirs, names, strict=True)]
    table = markdown_table(rows)
    out_dir = os.path.abspath(out_dir)
    path = os.path.join(out_dir, "compare.md")
    groups, notes = confusion_matrices(rows, checkpoint, data_dir) if confusion else ([], [])
    import jax

    if jax.process_index() != 0:  # every process evaluates (sharded); process 0 writes
        return table, path
    os.makedirs(out_dir, exist_ok=True)
    title = f"{len(rows)} runs"
    plots.overlaid_curves(
        {r["name"]: r["records"] for r in rows}, os.path.join(out_dir, "curves.png"),
        f"Training curves of {title}",
    )  # fmt: skip
    plots.accuracy_and_size(rows, os.path.join(out_dir, "accuracy.png"), f"Comparison of {title}")
    lines = [f"# Comparison of {title}", "", table, ""]
    lines += ["Runs: " + ", ".join(f"{r['name']} = `{r['workdir']}`" for r in rows), ""]
    lines += ["## Training curves", "", "![training curves](curves.png)", ""]
    lines += ["## Test accuracy and model size", "", "![accuracy](accuracy.png)", ""]
    for old in os.listdir(out_dir):  # figures of an earlier comparison with more groups
        if old.startswith("confusion_matrices") and old.endswith(".png"):
            os.remove(os.path.join(out_dir, old))
    if confusion:
        lines += ["## Confusion matrices (test, row-normalized)", ""]
        for i, (class_names, matrices) in enumerate(groups):
            file = "confusion_matrices.png" if i == 0 else f"confusion_matrices_{i + 1}.png"
            plots.confusion_grid(
                matrices, class_names, os.path.join(out_dir, file),
                f"Test confusion matrices, row-normalized ({len(class_names)} classes)",
            )  # fmt: skip
            lines += [f"![confusion matrices]({file})", ""]
        lines += [f"- {n}" for n in notes]
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    return table, path
