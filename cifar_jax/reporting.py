"""A report of one run: plots and a markdown page embedding them.

    python -m cifar_jax report --workdir=runs/lenet [--checkpoint=latest|best|STEP]
        [--num_examples=18] [--out=DIR] [--data_dir=DIR]

Writes into ``<workdir>/report/`` (or ``--out``):

==========================  =========================================================
``report.md``               the page: run facts, test metrics, every figure, tables
``curves.png``              train / validation loss and accuracy per epoch (+ test)
``learning_rate.png``       the learning-rate schedule as trained
``confusion_matrix.png``    test confusion matrix: counts and row-normalized
``per_class_accuracy.png``  accuracy of each class against the overall accuracy
``confidence.png``          confidence of correct / wrong predictions, reliability
``well_classified.png``     confidently correct test images (P, GT, C) (report 000 Fig 3a)
``misclassified.png``       wrong predictions (P, GT, C) (report 000 Fig 3b)
``filters.png``             first-layer convolution filters (report 001)
==========================  =========================================================

and ``MODEL_CARD.md`` into the workdir itself (data, recipe, parameters, test metrics
with the commit and machine, intended use, known limits such as calibration), so an
exported model travels with its facts.

The test predictions come from ``eval/predictions_test_none.npz`` when it holds these
exact weights (written by ``cifar_jax.evaluation``), otherwise they are computed (and
saved there).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from cifar_jax import classification, inference, runs

FIGURES = (
    "curves.png",
    "learning_rate.png",
    "confusion_matrix.png",
    "per_class_accuracy.png",
    "confidence.png",
    "well_classified.png",
    "misclassified.png",
    "filters.png",
)


def first_layer_kernel(run: runs.LoadedRun) -> tuple[str, np.ndarray] | None:
    """``(module path, kernel (kh, kw, 3, filters))`` of the first convolution called."""
    import flax.linen as nn
    import jax
    import jax.numpy as jnp

    params = jax.tree.map(lambda x: np.asarray(x.addressable_data(0)), run.state.params)
    order: list[tuple[str, ...]] = []

    def record(next_fun, args, kwargs, context):
        if context.method_name == "__call__":
            order.append(tuple(context.module.path))
        return next_fun(*args, **kwargs)

    variables = {"params": params, "batch_stats": run.state.batch_stats}
    with nn.intercept_methods(record):
        jax.eval_shape(
            lambda v: run.model.apply(v, jnp.zeros((1, 32, 32, 3)), train=False), variables
        )
    for path in order:
        node: Any = params
        for key in path:
            node = node.get(key) if hasattr(node, "get") else None
            if node is None:
                break
        kernel = node.get("kernel") if hasattr(node, "get") else None
        if kernel is not None and np.ndim(kernel) == 4 and np.shape(kernel)[2] == 3:
            return "/".join(path), np.asarray(kernel)
    return None


def select_examples(
    probs: np.ndarray, labels: np.ndarray, num: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Indices of well-classified and of misclassified examples to show.

    Well-classified: the most confident correct example of each class in turn (so the
    grid covers the classes), then the next most confident, and so on. Misclassified: a
    seeded random sample of the wrong predictions (representative rather than the
    extremes), shown from the most to the least confident.
    """
    preds = probs.argmax(-1)
    conf = probs.max(-1)
    correct = preds == labels
    per_class = []
    for c in np.unique(labels):
        idx = np.flatnonzero(correct & (labels == c))
        per_class.append(idx[np.argsort(-conf[idx], kind="stable")])
    well: list[int] = []
    rank = 0
    while len(well) < num and any(rank < len(p) for p in per_class):
        well.extend(int(p[rank]) for p in per_class if rank < len(p))
        rank += 1
    wrong = np.flatnonzero(~correct)
    rng = np.random.default_rng(seed)
    sample = rng.choice(wrong, size=min(num, wrong.size), replace=False) if wrong.size else wrong
    sample = sample[np.argsort(-conf[sample], kind="stable")]
    return np.asarray(well[:num], np.int64), np.asarray(sample, np.int64)


def _caption(names: tuple[str, ...], pred: int, true: int, conf: float) -> str:
    return f"P: {names[pred]}\nGT: {names[true]}\nC: {conf:.2f}"


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.2f}%"


def _metrics_table(m: dict[str, Any], results: dict[str, Any] | None) -> list[str]:
    rows = [
        ("accuracy", _pct(m["accuracy"])),
        ("loss (cross-entropy)", f"{m['loss']:.4f}"),
        *((f"top-{k} accuracy", _pct(v)) for k, v in m["top_k_accuracy"].items() if k != "1"),
        ("macro precision / recall / F1",
         " / ".join(f"{m['macro'][k]:.4f}" for k in ("precision", "recall", "f1"))),
        ("weighted precision / recall / F1",
         " / ".join(f"{m['weighted'][k]:.4f}" for k in ("precision", "recall", "f1"))),
        ("mean confidence, correct predictions", _pct(m["mean_confidence_correct"])),
        ("mean confidence, wrong predictions", _pct(m["mean_confidence_wrong"])),
        (f"expected calibration error ({m['ece_bins']} bins)", f"{m['ece']:.4f}"),
    ]  # fmt: skip
    if results and results.get("test_accuracy_tta") is not None:
        tta = results.get("config", {}).get("tta", "?")
        rows.append((f"accuracy with TTA {tta} (results.json)", _pct(results["test_accuracy_tta"])))
    lines = ["| metric | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in rows]
    return lines


def _run_facts(run: runs.LoadedRun) -> list[str]:
    from cifar_jax import models

    c, r = run.config, run.results or {}
    facts = [
        ("workdir", f"`{run.workdir}`"),
        ("model", f"{c.model}: {models.model_description(c.model)}"),
        ("trainable params", f"{run.trainable_params:,}"),
        ("data", f"{c.dataset}, {run.num_classes} classes, {run.dataset.source}"),
        ("split sizes", f"{len(run.dataset.train):,} train, "
         f"{len(run.dataset.val) if run.dataset.val is not None else 0:,} val, "
         f"{len(run.dataset.test):,} test"),
        ("checkpoint", f"{run.checkpoint} (step {run.step}) `{run.checkpoint_path}`"),
        ("optimizer", f"{c.optimizer}, lr {c.learning_rate:g}, {c.schedule} schedule, "
         f"batch {c.batch_size}, weight decay {c.weight_decay:g}"),
    ]  # fmt: skip
    if r:
        trained = (
            f"{r.get('epochs', 0):g} epochs ({r.get('steps')} steps) in "
            f"{r.get('train_seconds', 0):.0f} s on {r.get('num_devices')} "
            f"{r.get('platform')} device(s), seed {r.get('seed')}"
        )
        test = f"{_pct(r.get('test_accuracy'))} / {r.get('test_loss', float('nan')):.4f}"
        if r.get("tested_checkpoint") == "best":
            test += " (tested on the best-validation checkpoint: --checkpoint=best)"
        facts += [("trained", trained), ("results.json test accuracy / loss", test)]
    else:
        facts.append(("trained", "unfinished run (no results.json)"))
    lines = ["| | |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in facts]
    return lines


MODEL_CARD = "MODEL_CARD.md"
# Augmentation fields a model card names when they are on: (field, shown when != this).
_AUGMENTATIONS = (
    ("random_crop_padding", 0), ("random_flip", False), ("autoaugment", "none"),
    ("color_jitter_brightness", 0.0), ("color_jitter_contrast", 0.0),
    ("color_jitter_saturation", 0.0), ("color_jitter_hue", 0.0), ("random_rotation", 0.0),
    ("random_erasing_prob", 0.0), ("cutout_size", 0), ("mixup_alpha", 0.0),
    ("cutmix_alpha", 0.0),
)  # fmt: skip


def _augmentation(c: Any) -> str:
    on = [f"{k}={c[k]}" for k, off in _AUGMENTATIONS if k in c and c[k] != off]
    if c.get("random_crop_padding", 0):
        on.append(f"crop_padding_mode={c.crop_padding_mode}")
    if c.get("random_flip", False):
        on.append(f"flip_mode={c.flip_mode}")
    return ", ".join(on) or "none"


def model_card(run: runs.LoadedRun, m: dict[str, Any]) -> str:
    """``MODEL_CARD.md``: what the model is, what it was trained on and how, how well it
    does on the test split and where it falls short; ``m`` = the test metrics
    (:func:`classification.summarize`)."""
    from cifar_jax import models, runtime

    c, r, spec = run.config, run.results or {}, run.spec
    subset = f", the first {spec.class_subset} classes" if spec.class_subset else ""
    labels = f" ({spec.label_type} labels)" if spec.dataset == "cifar100" else ""
    per_class = classification.per_class_accuracy(np.asarray(m["confusion_matrix"]))
    worst, best = int(np.argmin(per_class)), int(np.argmax(per_class))
    ece, wrong_conf = m["ece"], m["mean_confidence_wrong"]
    trained = (
        f"{r.get('epochs', 0):g} epochs ({r.get('steps')} steps), seed {r.get('seed')}, "
        f"{r.get('train_seconds', 0):.0f} s on {r.get('num_devices')} x "
        f"{r.get('device_kind', r.get('platform'))} ({r.get('cpu', 'cpu unknown')}), "
        f"commit {r.get('commit', 'unknown')}"
        if r
        else "unfinished run (no results.json)"
    )
    lines = [
        f"# Model card: {run.name}",
        "",
        f"`{c.model}` ({models.model_description(c.model)}), trained with cifar_jax to "
        f"sort 32x32 RGB images into the {run.num_classes} classes of {spec.dataset}"
        f"{labels}{subset}: {', '.join(run.class_names)}.",
        "",
        "## Data",
        "",
        f"- Trained on {len(run.dataset.train):,} images (and "
        f"{len(run.dataset.val) if run.dataset.val is not None else 0:,} held out for "
        f"validation) of {spec.data_source}; tested on the {len(run.dataset.test):,} "
        "images of its test split.",
        f"- Input: uint8 RGB pixels, 32x32; normalized inside the model as "
        f"`(x / 255 - mean) / std` with mean {[round(x, 4) for x in spec.mean]}, std "
        f"{[round(x, 4) for x in spec.std]} ({spec.normalization}).",
        "",
        "## Recipe",
        "",
        f"- {c.optimizer}, learning rate {c.learning_rate:g} ({c.schedule} schedule), batch "
        f"{c.batch_size}, weight decay {c.weight_decay:g}, loss {c.loss}"
        + (f" (label smoothing {c.label_smoothing:g})" if c.label_smoothing else "")
        + ".",
        f"- Augmentation: {_augmentation(c)}.",
        f"- Trained: {trained}.",
        f"- Every field: `config.json` (also in `{inference.SPEC_FILE}`).",
        "",
        "## Parameters",
        "",
        f"- {run.trainable_params:,} trainable; checkpoint {run.checkpoint} (step {run.step}), "
        f"state_sha256 `{run.state_sha256()}`"
        + ("; bfloat16 compute (half_precision)" if c.get("half_precision", False) else "")
        + ".",
        "",
        f"## Test metrics ({m['num_examples']:,} images)",
        "",
        "| accuracy | loss | top-5 accuracy | ECE (15 bins) | macro F1 |",
        "|---|---|---|---|---|",
        f"| {_pct(m['accuracy'])} | {m['loss']:.4f} | "
        f"{_pct(m['top_k_accuracy'].get('5', m['accuracy']))} | {ece:.4f} | "
        f"{m['macro']['f1']:.4f} |",
        "",
        f"Measured by `python -m cifar_jax report` at commit {runtime.git_commit()} on "
        f"{runtime.cpu_description()} ({run.mesh.devices.size} x "
        f"{run.mesh.devices.flat[0].device_kind}).",
        "",
        "## Intended use",
        "",
        f"Research and teaching: classifying small photos of the {run.num_classes} classes "
        "above, and comparing training recipes. Not for decisions about people, nor for "
        "anything where a wrong label causes harm.",
        "",
        "## Known limits",
        "",
        "- Every image gets one of these classes, including images of none of them: there "
        "is no 'unknown' answer.",
        f"- Calibration: expected calibration error {ece:.4f} on the test split; wrong "
        f"predictions still get a mean confidence of {_pct(wrong_conf)}. Treat the "
        "probabilities as scores, not frequencies, unless the ECE above is small.",
        f"- Accuracy differs by class: worst {run.class_names[worst]} "
        f"{_pct(per_class[worst])}, best {run.class_names[best]} {_pct(per_class[best])}.",
        "- Measured on CIFAR's own test split only: photos from other sources (cameras, "
        "sizes, framings) will score lower. Larger images are resized to 32x32 whole "
        "(aspect ratio not kept).",
        "",
        "## Using it",
        "",
        f"- Python: `cifar_jax.load_run({run.workdir!r}).predict(images)` (uint8 "
        "(N, 32, 32, 3) arrays or image paths).",
        f"- Elsewhere: `python -m cifar_jax export --workdir={run.workdir} --format=onnx "
        "--out=model.onnx` (or `--format=stablehlo`); `model.onnx.json` beside it says "
        "what goes in and comes out. No data set is needed.",
        "",
    ]
    return "\n".join(lines)


def write_report(
    run: runs.LoadedRun,
    out_dir: str | None = None,
    num_examples: int = 18,
    seed: int = 0,
    predictions: tuple[np.ndarray, np.ndarray] | None = None,
) -> str:
    """Draws every figure and writes ``report.md``; returns its path.

    ``predictions`` = ``(probs, labels)`` of the test split if already computed.
    """
    from cifar_jax import evaluation, model_summary, plots

    out_dir = os.path.abspath(out_dir or os.path.join(run.workdir, "report"))
    os.makedirs(out_dir, exist_ok=True)
    name = run.name
    probs, labels = predictions or evaluation.predictions(run, "test", "none")
    m = classification.summarize(probs, labels, run.class_names)
    cm = np.asarray(m["confusion_matrix"])
    records = runs.read_metrics(run.workdir)

    def out(file: str) -> str:
        return os.path.join(out_dir, file)

    plots.training_curves(records, out("curves.png"), f"{name}: loss and accuracy")
    plots.learning_rate_curve(records, out("learning_rate.png"), f"{name}: learning rate")
    plots.confusion_matrices(
        cm, run.class_names, out("confusion_matrix.png"), f"{name}: test confusion matrix"
    )
    class_acc = classification.per_class_accuracy(cm)
    plots.per_class_accuracy(
        class_acc, run.class_names, m["accuracy"], out("per_class_accuracy.png"),
        f"{name}: test accuracy per class",
    )  # fmt: skip
    plots.confidence(probs, labels, out("confidence.png"), f"{name}: confidence on the test set")
    well, wrong = select_examples(probs, labels, num_examples, seed)
    test_images = run.dataset.test.images
    preds, conf = probs.argmax(-1), probs.max(-1)
    for file, idx, heading, color in (
        ("well_classified.png", well, "well-classified test images (most confident per class)",
         "darkgreen"),
        ("misclassified.png", wrong, "misclassified test images (random sample)", "darkred"),
    ):  # fmt: skip
        plots.image_grid(
            test_images[idx],
            [_caption(run.class_names, preds[i], labels[i], conf[i]) for i in idx],
            [color] * len(idx),
            out(file),
            f"{name}: {heading}. P = prediction, GT = truth, C = confidence (max softmax)",
        )
    kernel = first_layer_kernel(run)
    if kernel is not None:
        plots.first_layer_filters(
            kernel[1], out("filters.png"),
            f"{name}: first-layer filters ({kernel[0]}, {kernel[1].shape[-1]} filters "
            f"{kernel[1].shape[0]}x{kernel[1].shape[1]})",
        )  # fmt: skip
    elif os.path.exists(out("filters.png")):
        os.remove(out("filters.png"))

    lines = [f"# Report: {name}", "", *_run_facts(run), ""]
    lines += [
        f"## Test metrics ({m['num_examples']:,} images)",
        "",
        *_metrics_table(m, run.results),
    ]
    lines += ["", "## Training curves", "", "![loss and accuracy](curves.png)", ""]
    if not plots.has_series(records, "val", "loss"):
        lines += ["(no validation split in this run: --config.val_examples=0)", ""]
    lines += ["![learning rate](learning_rate.png)", ""]
    lines += ["## Confusion matrix", "", "![confusion matrix](confusion_matrix.png)", ""]
    lines += ["## Per-class metrics", "", "![per-class accuracy](per_class_accuracy.png)", ""]
    lines += [
        "| class | accuracy | precision | recall | F1 | support |",
        "|---|---|---|---|---|---|",
    ]
    for cls, c in m["per_class"].items():
        lines.append(
            f"| {cls} | {c['accuracy']:.4f} | {c['precision']:.4f} | {c['recall']:.4f} | "
            f"{c['f1']:.4f} | {c['support']} |"
        )
    lines += ["", "## Confidence and calibration", "", "![confidence](confidence.png)", ""]
    lines += ["## Well-classified and misclassified test images", ""]
    lines += ["![well-classified](well_classified.png)", "", "![misclassified](misclassified.png)"]
    if kernel is not None:
        lines += ["", "## First-layer filters", "", "![first-layer filters](filters.png)"]
    lines += [
        "",
        "## Parameters per layer",
        "",
        "```",
        model_summary.summarize(run.config),
        "```",
        "",
    ]
    path = out("report.md")
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines))
    with open(os.path.join(run.workdir, MODEL_CARD), "w", encoding="utf-8") as f:
        f.write(model_card(run, m))
    return path
