"""The figures of the report, compare and analyze commands (matplotlib, Agg backend).

Every function draws one figure from plain numpy / JSON data, saves it as a PNG and
returns the path; none needs JAX or a display. Every figure has a title, axis labels and
a legend where it shows several series.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display; must precede pyplot

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from cifar_jax import classification  # noqa: E402

DPI = 110
# Colours of the splits, fixed so every figure reads the same way.
SPLIT_COLORS = {"train": "tab:blue", "val": "tab:orange", "test": "tab:green"}


def _save(fig: Any, path: str) -> str:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return path


# ---------------------------------------------------------------- metric records


def split_series(
    records: Sequence[Mapping[str, Any]], split: str, key: str
) -> tuple[np.ndarray, np.ndarray]:
    """``(epochs, values)`` of ``key`` for one split of ``metrics.jsonl`` records.

    Records without an ``epoch`` get one from their step (the train records give the
    steps per epoch). Later records of the same step replace earlier ones (a resumed run
    logs some steps twice).
    """
    per_epoch = steps_per_epoch(records)
    points: dict[int, tuple[float, float]] = {}
    for r in records:
        if r.get("split") != split or r.get(key) is None:
            continue
        epoch = r.get("epoch")
        if epoch is None:
            epoch = r["step"] / per_epoch if per_epoch else float(r["step"])
        points[int(r["step"])] = (float(epoch), float(r[key]))
    if not points:
        return np.zeros(0), np.zeros(0)
    ordered = [points[s] for s in sorted(points)]
    return np.array([p[0] for p in ordered]), np.array([p[1] for p in ordered])


def steps_per_epoch(records: Sequence[Mapping[str, Any]]) -> float | None:
    for r in records:
        if r.get("epoch") and r.get("step"):
            return r["step"] / r["epoch"]
    return None


def has_series(records: Sequence[Mapping[str, Any]], split: str, key: str) -> bool:
    return split_series(records, split, key)[0].size > 0


# -------------------------------------------------------------------- run curves


def training_curves(records: Sequence[Mapping[str, Any]], path: str, title: str) -> str:
    """Loss and accuracy against epochs: train and validation lines, the test point."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, key, label in ((axes[0], "loss", "loss"), (axes[1], "accuracy", "accuracy")):
        for split, style in (("train", "-"), ("val", "-o")):
            x, y = split_series(records, split, key)
            if x.size:
                ax.plot(
                    x,
                    y,
                    style,
                    color=SPLIT_COLORS[split],
                    markersize=3,
                    label="train (running mean per log interval)"
                    if split == "train"
                    else "validation",
                )
        x, y = split_series(records, "test", key)
        if x.size:
            ax.plot(x[-1:], y[-1:], "*", color=SPLIT_COLORS["test"], markersize=14, label="test")
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.set_title(label.capitalize())
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    return _save(fig, path)


def learning_rate_curve(records: Sequence[Mapping[str, Any]], path: str, title: str) -> str:
    x, y = split_series(records, "train", "learning_rate")
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(x, y, color="tab:purple", label="learning rate")
    ax.set_xlabel("epoch")
    ax.set_ylabel("learning rate")
    ax.set_title(title)
    ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    ax.grid(alpha=0.3)
    return _save(fig, path)


# ------------------------------------------------------------ confusion matrices


def _class_ticks(ax: Any, class_names: Sequence[str], max_labels: int = 40) -> None:
    n = len(class_names)
    if n > max_labels:  # 100 names are unreadable; show every 10th index instead
        ticks = np.arange(0, n, 10)
        ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.set_yticks(ticks, [str(t) for t in ticks])
        return
    size = 9 if n <= 12 else 7 if n <= 25 else 5
    ax.set_xticks(range(n), class_names, rotation=60, ha="right", fontsize=size)
    ax.set_yticks(range(n), class_names, fontsize=size)


def _heatmap(ax: Any, matrix: np.ndarray, class_names: Sequence[str], fmt: str, vmax=None) -> Any:
    n = matrix.shape[0]
    image = ax.imshow(matrix, cmap="Blues", vmin=0, vmax=vmax)
    if n <= 20:
        threshold = (vmax if vmax is not None else matrix.max()) / 2
        size = 8 if n <= 10 else 6
        for i in range(n):
            for j in range(n):
                v = matrix[i, j]
                if v == 0:
                    continue  # blank zeros keep the non-zero cells readable
                ax.text(
                    j,
                    i,
                    format(v, fmt),
                    ha="center",
                    va="center",
                    fontsize=size,
                    color="white" if v > threshold else "black",
                )
    _class_ticks(ax, class_names)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    return image


def confusion_matrices(cm: np.ndarray, class_names: Sequence[str], path: str, title: str) -> str:
    """The raw counts and the row-normalized matrix side by side."""
    cm = np.asarray(cm)
    n = cm.shape[0]
    side = 6.5 if n <= 10 else 9.5 if n <= 20 else 9
    fig, axes = plt.subplots(1, 2, figsize=(2 * side + 1.5, side))
    im = _heatmap(axes[0], cm, class_names, "d")
    axes[0].set_title("counts (rows: true class)")
    fig.colorbar(im, ax=axes[0], fraction=0.046, pad=0.04, label="images")
    im = _heatmap(axes[1], classification.normalize_rows(cm), class_names, ".2f", vmax=1.0)
    axes[1].set_title("row-normalized (share of each true class)")
    fig.colorbar(im, ax=axes[1], fraction=0.046, pad=0.04, label="share of the true class")
    fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)


def confusion_grid(
    matrices: Mapping[str, np.ndarray], class_names: Sequence[str], path: str, title: str
) -> str:
    """Row-normalized confusion matrices of several runs, one panel each, shared scale."""
    names = list(matrices)
    cols = min(3, len(names))
    rows = math.ceil(len(names) / cols)
    n = len(class_names)
    side = 5.5 if n <= 10 else 8
    fig, axes = plt.subplots(rows, cols, figsize=(cols * side, rows * side), squeeze=False)
    image = None
    for ax, name in zip(axes.flat, names, strict=False):
        image = _heatmap(
            ax, classification.normalize_rows(matrices[name]), class_names, ".2f", vmax=1.0
        )
        acc = np.trace(matrices[name]) / max(1, np.sum(matrices[name]))
        ax.set_title(f"{name} (accuracy {100 * acc:.2f}%)")
    for ax in axes.flat[len(names) :]:
        ax.axis("off")
    fig.suptitle(title)
    fig.tight_layout()
    if image is not None:
        fig.colorbar(
            image, ax=axes.ravel().tolist(), fraction=0.02, pad=0.02, label="share of true class"
        )
    return _save(fig, path)


# ---------------------------------------------------------------- per class, calibration


def per_class_accuracy(
    accuracy: np.ndarray, class_names: Sequence[str], overall: float, path: str, title: str
) -> str:
    """Horizontal bars of the accuracy of each class, with the overall accuracy."""
    n = len(class_names)
    fig, ax = plt.subplots(figsize=(8, max(3.5, 0.3 * n + 1)))
    y = np.arange(n)
    ax.barh(y, 100 * np.asarray(accuracy), color="tab:blue", label="class accuracy")
    ax.axvline(
        100 * overall, color="tab:red", linestyle="--", label=f"overall {100 * overall:.2f}%"
    )
    ax.set_yticks(y, class_names, fontsize=9 if n <= 25 else 6)
    ax.invert_yaxis()
    ax.set_xlim(0, 100)
    ax.set_xlabel("accuracy (%)")
    ax.set_ylabel("class")
    ax.set_title(title)
    ax.grid(axis="x", alpha=0.3)
    ax.legend(loc="lower right")
    return _save(fig, path)


def confidence(probs: np.ndarray, labels: np.ndarray, path: str, title: str) -> str:
    """Histogram of the confidence of correct and wrong predictions; reliability diagram."""
    probs = np.asarray(probs)
    conf = probs.max(axis=-1)
    correct = probs.argmax(axis=-1) == np.asarray(labels)
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    bins = np.linspace(0, 1, 21)
    axes[0].hist(
        [conf[correct], conf[~correct]],
        bins=bins,
        color=["tab:green", "tab:red"],
        label=[f"correct ({correct.sum():,})", f"wrong ({(~correct).sum():,})"],
    )
    for values, color in ((conf[correct], "darkgreen"), (conf[~correct], "darkred")):
        if values.size:
            axes[0].axvline(values.mean(), color=color, linestyle="--", linewidth=1)
    axes[0].set_xlabel("confidence (max softmax probability)")
    axes[0].set_ylabel("images")
    axes[0].set_title("Confidence of correct and wrong predictions (dashed: means)")
    axes[0].legend()
    b = classification.calibration_bins(conf, correct)
    centers = (b["edges"][:-1] + b["edges"][1:]) / 2
    width = b["edges"][1] - b["edges"][0]
    used = b["count"] > 0
    axes[1].bar(
        centers[used], b["accuracy"][used], width=width * 0.9, color="tab:blue", label="accuracy"
    )
    axes[1].plot([0, 1], [0, 1], "--", color="gray", label="perfect calibration")
    axes[1].set_xlim(0, 1)
    axes[1].set_ylim(0, 1)
    axes[1].set_xlabel("confidence bin")
    axes[1].set_ylabel("accuracy in bin")
    ece = classification.expected_calibration_error(conf, correct)
    axes[1].set_title(f"Reliability diagram (ECE {ece:.4f}, {len(centers)} bins)")
    axes[1].legend(loc="upper left")
    fig.suptitle(title)
    return _save(fig, path)


# --------------------------------------------------------------------- images


def image_grid(
    images: np.ndarray,
    captions: Sequence[str],
    colors: Sequence[str],
    path: str,
    title: str,
    cols: int = 6,
) -> str:
    """uint8 NHWC images in a grid, each with a caption (several lines allowed)."""
    n = len(images)
    if n == 0:
        fig, ax = plt.subplots(figsize=(6, 1.5))
        ax.axis("off")
        ax.text(0.5, 0.5, "no images to show", ha="center", va="center")
        ax.set_title(title)
        return _save(fig, path)
    cols = min(cols, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(
        rows, cols, figsize=(cols * 2.0, rows * 2.6 + 0.4), squeeze=False, layout="constrained"
    )
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, caption, color in zip(axes.flat, images, captions, colors, strict=False):
        ax.imshow(image, interpolation="nearest")
        ax.set_title(caption, fontsize=8.5, color=color)
    fig.suptitle(title, fontsize=11)
    return _save(fig, path)


def first_layer_filters(kernel: np.ndarray, path: str, title: str) -> str:
    """Each first-layer filter as a colour image and as a grayscale sign map.

    ``kernel`` is (kh, kw, 3, filters). Top: the RGB filter, each scaled to its own
    min..max. Bottom: the mean over the colour channels on a scale symmetric around 0
    shared by all filters: white positive, black negative, gray near zero.
    """
    kernel = np.asarray(kernel, np.float64)
    n = kernel.shape[-1]
    cols = min(n, 8 if n <= 64 else 16)
    rows = math.ceil(n / cols)
    cell = 0.8 if n > 64 else 1.1 if n > 16 else 1.3
    fig = plt.figure(figsize=(max(cols * cell, 6.5), 2 * rows * cell + 1.6), layout="constrained")
    subfigs = fig.subfigures(2, 1)
    gray = kernel.mean(axis=2)
    limit = np.abs(gray).max() or 1.0
    for sub, heading, is_rgb in (
        (subfigs[0], "colour (each filter scaled to its own min..max)", True),
        (subfigs[1], "channel mean (white +, black -, gray 0; one scale for all)", False),
    ):
        axes = sub.subplots(rows, cols, squeeze=False)
        for ax in axes.flat:
            ax.axis("off")
        for i, ax in enumerate(axes.flat[:n]):
            if is_rgb:
                f = kernel[..., i]
                span = f.max() - f.min()
                ax.imshow(
                    (f - f.min()) / span if span else np.full_like(f, 0.5), interpolation="nearest"
                )
            else:
                ax.imshow(
                    gray[..., i], cmap="gray", vmin=-limit, vmax=limit, interpolation="nearest"
                )
            ax.set_title(str(i), fontsize=7)
        sub.suptitle(heading, fontsize=10)
    fig.suptitle(title, fontsize=12)
    return _save(fig, path)


# --------------------------------------------------------------------- compare


def overlaid_curves(runs: Mapping[str, Sequence[Mapping[str, Any]]], path: str, title: str) -> str:
    """Validation and train loss / accuracy of several runs against epochs."""
    fig, axes = plt.subplots(2, 2, figsize=(13, 9))
    panels = (
        (axes[0, 0], "val", "accuracy", "validation accuracy"),
        (axes[0, 1], "val", "loss", "validation loss"),
        (axes[1, 0], "train", "accuracy", "train accuracy"),
        (axes[1, 1], "train", "loss", "train loss"),
    )
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, split, key, heading in panels:
        drawn = 0
        for i, (name, records) in enumerate(runs.items()):
            x, y = split_series(records, split, key)
            if not x.size:
                continue
            ax.plot(x, y, "-o" if split == "val" else "-", markersize=3, label=name,
                    color=colors[i % len(colors)])  # fmt: skip
            drawn += 1
        ax.set_xlabel("epoch")
        ax.set_ylabel(key)
        ax.set_title(heading)
        ax.grid(alpha=0.3)
        if drawn:
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, f"no {split} records", ha="center", va="center",
                    transform=ax.transAxes)  # fmt: skip
    fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)


def accuracy_and_size(rows: Sequence[Mapping[str, Any]], path: str, title: str) -> str:
    """Test accuracy per run (bars) and accuracy against parameter count (scatter)."""
    names = [r["name"] for r in rows]
    acc = np.array([np.nan if r.get("test_accuracy") is None else 100 * r["test_accuracy"]
                    for r in rows])  # fmt: skip
    params = np.array([r.get("trainable_params") or np.nan for r in rows], np.float64)
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    bar_colors = [colors[i % len(colors)] for i in range(len(rows))]
    x = np.arange(len(rows))
    axes[0].bar(x, np.nan_to_num(acc), color=bar_colors)
    for i, a in enumerate(acc):
        if np.isfinite(a):
            axes[0].text(i, a, f"{a:.2f}", ha="center", va="bottom", fontsize=8)
    axes[0].set_xticks(x, names, rotation=30, ha="right", fontsize=8)
    axes[0].set_ylabel("test accuracy (%)")
    axes[0].set_xlabel("run")
    axes[0].set_ylim(0, min(100, np.nanmax(acc) * 1.15) if np.isfinite(acc).any() else 100)
    axes[0].set_title("Test accuracy")
    for i, name in enumerate(names):
        if np.isfinite(acc[i]) and np.isfinite(params[i]):
            axes[1].scatter(params[i], acc[i], s=60, color=bar_colors[i], label=name)
    axes[1].set_xscale("log")
    axes[1].set_xlabel("trainable parameters (log scale)")
    axes[1].set_ylabel("test accuracy (%)")
    axes[1].set_title("Accuracy against model size")
    axes[1].grid(alpha=0.3)
    if axes[1].collections:
        axes[1].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)


__all__ = [
    "accuracy_and_size",
    "confidence",
    "confusion_grid",
    "confusion_matrices",
    "first_layer_filters",
    "has_series",
    "image_grid",
    "learning_rate_curve",
    "overlaid_curves",
    "per_class_accuracy",
    "split_series",
    "training_curves",
]
