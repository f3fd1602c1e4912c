"""Classification metrics as pure numpy functions of predictions and labels.

Everything here takes host arrays (``probs`` of shape (N, C) summing to 1 over C, integer
``labels`` of shape (N,)) and returns numbers or arrays, so it can be tested against
hand-computed values and reused by every command (evaluate, report, compare).

Conventions (the same as scikit-learn's defaults):

* the confusion matrix has the true class on the rows and the predicted class on the
  columns: ``cm[i, j]`` = examples of class ``i`` predicted as ``j``;
* a ratio with a zero denominator (precision of a class never predicted, recall of a
  class absent from the labels) is 0, and such classes still count in macro averages;
* weighted averages weight each class by its support (its number of true examples);
* the expected calibration error uses equal-width confidence bins ``(k/B, (k+1)/B]``
  (the first bin also holds confidence 0) and weights each bin by its share of examples.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

ECE_BINS = 15


def softmax(logits: np.ndarray) -> np.ndarray:
    """Numerically stable softmax over the last axis."""
    z = np.asarray(logits, np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def _labels(labels: np.ndarray, num_classes: int) -> np.ndarray:
    labels = np.asarray(labels).astype(np.int64).ravel()
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(
            f"labels must be in [0, {num_classes}), got {labels.min()}..{labels.max()}"
        )
    return labels


def confusion_matrix(labels: np.ndarray, preds: np.ndarray, num_classes: int) -> np.ndarray:
    """``cm[i, j]`` = number of examples of true class ``i`` predicted as class ``j``."""
    labels = _labels(labels, num_classes)
    preds = _labels(preds, num_classes)
    if labels.shape != preds.shape:
        raise ValueError(f"labels {labels.shape} and preds {preds.shape} differ in shape")
    flat = np.bincount(labels * num_classes + preds, minlength=num_classes * num_classes)
    return flat.reshape(num_classes, num_classes)


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    num = np.asarray(num, np.float64)
    den = np.asarray(den, np.float64)
    return np.divide(num, den, out=np.zeros_like(num), where=den != 0)


def per_class_accuracy(cm: np.ndarray) -> np.ndarray:
    """Accuracy on the examples of each class (= recall); 0 for a class with no examples."""
    cm = np.asarray(cm)
    return _safe_div(np.diag(cm), cm.sum(axis=1))


def normalize_rows(cm: np.ndarray) -> np.ndarray:
    """Each row divided by its sum (the share of class ``i`` predicted as ``j``)."""
    cm = np.asarray(cm, np.float64)
    return _safe_div(cm, cm.sum(axis=1, keepdims=True))


def precision_recall_f1(cm: np.ndarray) -> dict[str, Any]:
    """Per-class precision, recall, F1 and support, and their macro and weighted averages.

    Returns ``{"precision": (C,), "recall": (C,), "f1": (C,), "support": (C,),
    "macro": {"precision", "recall", "f1"}, "weighted": {...}}``.
    """
    cm = np.asarray(cm, np.int64)
    tp = np.diag(cm).astype(np.float64)
    support = cm.sum(axis=1)
    predicted = cm.sum(axis=0)
    precision = _safe_div(tp, predicted)
    recall = _safe_div(tp, support)
    f1 = _safe_div(2 * precision * recall, precision + recall)
    total = support.sum()
    weights = support / total if total else np.zeros_like(support, np.float64)
    out: dict[str, Any] = {
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "support": support,
    }
    out["macro"] = {k: float(np.mean(out[k])) for k in ("precision", "recall", "f1")}
    out["weighted"] = {k: float(np.sum(out[k] * weights)) for k in ("precision", "recall", "f1")}
    return out


def calibration_bins(
    confidences: np.ndarray, correct: np.ndarray, num_bins: int = ECE_BINS
) -> dict[str, np.ndarray]:
    """Equal-width confidence bins: edges, count, mean confidence and accuracy per bin.

    Bin ``k`` holds confidences in ``(k/B, (k+1)/B]``; confidence 0 goes to bin 0.
    Empty bins have mean confidence and accuracy 0.
    """
    conf = np.asarray(confidences, np.float64).ravel()
    correct = np.asarray(correct, np.float64).ravel()
    edges = np.linspace(0.0, 1.0, num_bins + 1)
    index = np.clip(np.ceil(conf * num_bins).astype(np.int64) - 1, 0, num_bins - 1)
    counts = np.bincount(index, minlength=num_bins)
    conf_sum = np.bincount(index, weights=conf, minlength=num_bins)
    acc_sum = np.bincount(index, weights=correct, minlength=num_bins)
    return {
        "edges": edges,
        "count": counts,
        "confidence": _safe_div(conf_sum, counts),
        "accuracy": _safe_div(acc_sum, counts),
    }


def expected_calibration_error(
    confidences: np.ndarray, correct: np.ndarray, num_bins: int = ECE_BINS
) -> float:
    """ECE = sum over bins of (bin size / N) * |accuracy(bin) - mean confidence(bin)|."""
    bins = calibration_bins(confidences, correct, num_bins)
    n = bins["count"].sum()
    if n == 0:
        return 0.0
    gap = np.abs(bins["accuracy"] - bins["confidence"])
    return float(np.sum(bins["count"] / n * gap))


def ece(probs: np.ndarray, labels: np.ndarray, num_bins: int = ECE_BINS) -> float:
    """Expected calibration error of the top-1 prediction of ``probs``."""
    probs = np.asarray(probs)
    correct = probs.argmax(axis=-1) == np.asarray(labels)
    return expected_calibration_error(probs.max(axis=-1), correct, num_bins)


def topk_accuracy(probs: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Share of examples whose true class is among the ``k`` highest scores.

    Ties are broken towards the lower class index (as ``argmax`` does for k = 1).
    """
    probs = np.asarray(probs)
    labels = np.asarray(labels).ravel()
    if not 1 <= k <= probs.shape[-1]:
        raise ValueError(f"k={k} must be in 1..{probs.shape[-1]}")
    if labels.size == 0:
        return 0.0
    # Stable sort of the negated scores: equal scores keep their index order.
    top = np.argsort(-probs, axis=-1, kind="stable")[:, :k]
    return float(np.mean(np.any(top == labels[:, None], axis=-1)))


def nll(probs: np.ndarray, labels: np.ndarray, eps: float = 1e-12) -> float:
    """Mean negative log-likelihood of the true class (the cross-entropy loss)."""
    probs = np.asarray(probs, np.float64)
    labels = np.asarray(labels).ravel()
    if labels.size == 0:
        return 0.0
    p = probs[np.arange(labels.size), labels]
    return float(np.mean(-np.log(np.maximum(p, eps))))


def mean_confidence(probs: np.ndarray, labels: np.ndarray) -> dict[str, float | None]:
    """Mean max-probability over all, correct and wrong predictions (None if no such one)."""
    probs = np.asarray(probs)
    conf = probs.max(axis=-1)
    correct = probs.argmax(axis=-1) == np.asarray(labels)

    def mean(mask: np.ndarray) -> float | None:
        return float(conf[mask].mean()) if mask.any() else None

    return {
        "all": mean(np.ones_like(correct)),
        "correct": mean(correct),
        "wrong": mean(~correct),
    }


def top_ks(num_classes: int) -> tuple[int, ...]:
    """The k of the top-k accuracies reported: 1..5 (bounded by the number of classes)."""
    return tuple(range(1, min(5, num_classes) + 1))


def summarize(
    probs: np.ndarray,
    labels: np.ndarray,
    class_names: Sequence[str],
    num_bins: int = ECE_BINS,
) -> dict[str, Any]:
    """Every metric of ``eval/metrics.json`` for one set of predictions, as JSON types."""
    probs = np.asarray(probs)
    labels = np.asarray(labels).ravel()
    num_classes = probs.shape[-1]
    if len(class_names) != num_classes:
        raise ValueError(f"{len(class_names)} class names for {num_classes} classes")
    preds = probs.argmax(axis=-1)
    cm = confusion_matrix(labels, preds, num_classes)
    prf = precision_recall_f1(cm)
    acc_per_class = per_class_accuracy(cm)
    conf = mean_confidence(probs, labels)
    return {
        "num_examples": int(labels.size),
        "num_classes": int(num_classes),
        "accuracy": float(np.mean(preds == labels)) if labels.size else 0.0,
        "loss": nll(probs, labels),
        "top_k_accuracy": {str(k): topk_accuracy(probs, labels, k) for k in top_ks(num_classes)},
        "mean_confidence": conf["all"],
        "mean_confidence_correct": conf["correct"],
        "mean_confidence_wrong": conf["wrong"],
        "ece": ece(probs, labels, num_bins),
        "ece_bins": num_bins,
        "macro": prf["macro"],
        "weighted": prf["weighted"],
        "per_class": {
            name: {
                "accuracy": float(acc_per_class[i]),
                "precision": float(prf["precision"][i]),
                "recall": float(prf["recall"][i]),
                "f1": float(prf["f1"][i]),
                "support": int(prf["support"][i]),
            }
            for i, name in enumerate(class_names)
        },
        "class_names": list(class_names),
        "confusion_matrix": cm.tolist(),
    }


__all__ = [
    "ECE_BINS",
    "calibration_bins",
    "confusion_matrix",
    "ece",
    "expected_calibration_error",
    "mean_confidence",
    "nll",
    "normalize_rows",
    "per_class_accuracy",
    "precision_recall_f1",
    "softmax",
    "summarize",
    "top_ks",
    "topk_accuracy",
]
