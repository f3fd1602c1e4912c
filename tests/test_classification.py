"""The metric math of cifar_jax.classification against values computed by hand."""

import math

import numpy as np
import pytest

from cifar_jax import classification as em

LABELS = np.array([0, 0, 1, 1, 2, 2])
PREDS = np.array([0, 1, 1, 1, 0, 2])


def test_confusion_matrix_rows_are_true_classes():
    cm = em.confusion_matrix(LABELS, PREDS, 3)
    np.testing.assert_array_equal(cm, [[1, 1, 0], [0, 2, 0], [1, 0, 1]])
    assert cm.sum() == LABELS.size


def test_confusion_matrix_rejects_out_of_range_labels():
    with pytest.raises(ValueError, match="labels must be in"):
        em.confusion_matrix(np.array([0, 3]), np.array([0, 1]), 3)


def test_precision_recall_f1_by_hand():
    prf = em.precision_recall_f1(em.confusion_matrix(LABELS, PREDS, 3))
    # precision = tp / predicted: [1/2, 2/3, 1/1]; recall = tp / support: [1/2, 2/2, 1/2]
    np.testing.assert_allclose(prf["precision"], [0.5, 2 / 3, 1.0])
    np.testing.assert_allclose(prf["recall"], [0.5, 1.0, 0.5])
    np.testing.assert_allclose(prf["f1"], [0.5, 0.8, 2 / 3])
    np.testing.assert_array_equal(prf["support"], [2, 2, 2])
    assert prf["macro"]["precision"] == pytest.approx((0.5 + 2 / 3 + 1) / 3)
    assert prf["macro"]["recall"] == pytest.approx(2 / 3)
    assert prf["macro"]["f1"] == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)
    # Equal supports: weighted == macro.
    for k in ("precision", "recall", "f1"):
        assert prf["weighted"][k] == pytest.approx(prf["macro"][k])


def test_weighted_average_weights_by_support():
    cm = em.confusion_matrix(np.array([0, 0, 0, 1]), np.array([0, 0, 1, 1]), 2)
    prf = em.precision_recall_f1(cm)
    np.testing.assert_allclose(prf["precision"], [1.0, 0.5])
    np.testing.assert_allclose(prf["recall"], [2 / 3, 1.0])
    np.testing.assert_allclose(prf["f1"], [0.8, 2 / 3])
    assert prf["weighted"]["precision"] == pytest.approx((3 * 1.0 + 0.5) / 4)
    assert prf["weighted"]["recall"] == pytest.approx(0.75)  # = accuracy
    assert prf["weighted"]["f1"] == pytest.approx((3 * 0.8 + 2 / 3) / 4)
    assert prf["macro"]["f1"] == pytest.approx((0.8 + 2 / 3) / 2)


def test_zero_division_gives_zero_and_counts_in_macro():
    # Class 2 has no examples and is never predicted.
    cm = em.confusion_matrix(np.array([0, 1]), np.array([0, 1]), 3)
    prf = em.precision_recall_f1(cm)
    np.testing.assert_array_equal(prf["precision"], [1, 1, 0])
    np.testing.assert_array_equal(prf["f1"], [1, 1, 0])
    assert prf["macro"]["f1"] == pytest.approx(2 / 3)
    assert prf["weighted"]["f1"] == pytest.approx(1.0)
    np.testing.assert_array_equal(em.per_class_accuracy(cm), [1, 1, 0])


def test_per_class_accuracy_and_row_normalization():
    cm = em.confusion_matrix(LABELS, PREDS, 3)
    np.testing.assert_allclose(em.per_class_accuracy(cm), [0.5, 1.0, 0.5])
    np.testing.assert_allclose(em.normalize_rows(cm), [[0.5, 0.5, 0], [0, 1, 0], [0.5, 0, 0.5]])


def test_expected_calibration_error_by_hand():
    conf = np.array([0.95, 0.9, 0.58, 0.55, 0.3])
    correct = np.array([1, 0, 1, 1, 0], bool)
    # 15 bins of width 1/15: 0.95 -> bin 14, 0.9 -> 13, 0.58 and 0.55 -> 8, 0.3 -> 4.
    bins = em.calibration_bins(conf, correct, 15)
    assert bins["count"][[4, 8, 13, 14]].tolist() == [1, 2, 1, 1]
    assert bins["count"].sum() == 5
    assert bins["confidence"][8] == pytest.approx(0.565)
    assert bins["accuracy"][8] == pytest.approx(1.0)
    want = (abs(1 - 0.95) + abs(0 - 0.9) + 2 * abs(1 - 0.565) + abs(0 - 0.3)) / 5
    assert em.expected_calibration_error(conf, correct, 15) == pytest.approx(want)
    assert want == pytest.approx(0.424)


def test_ece_bin_edges_and_perfect_calibration():
    # Confidence 1.0 goes to the last bin, 0 to the first; right edges are inclusive.
    bins = em.calibration_bins(np.array([0.0, 1.0, 0.5]), np.array([0, 1, 1]), 2)
    assert bins["count"].tolist() == [2, 1]
    # Perfectly calibrated: every bin's accuracy equals its confidence.
    assert em.expected_calibration_error(np.full(4, 0.75), np.array([1, 1, 1, 0])) == 0.0


def test_ece_from_probabilities():
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    labels = np.array([0, 0, 0])  # correct, wrong, correct
    want = em.expected_calibration_error(np.array([0.9, 0.8, 0.6]), np.array([1, 0, 1]))
    assert em.ece(probs, labels) == pytest.approx(want)


def test_topk_accuracy_with_ties():
    probs = np.array([[0.1, 0.5, 0.4], [0.3, 0.3, 0.4], [0.6, 0.3, 0.1]])
    labels = np.array([2, 1, 2])
    assert em.topk_accuracy(probs, labels, 1) == 0.0
    # Example 1: the tie 0.3/0.3 between classes 0 and 1 goes to class 0.
    assert em.topk_accuracy(probs, labels, 2) == pytest.approx(1 / 3)
    assert em.topk_accuracy(probs, labels, 3) == 1.0
    with pytest.raises(ValueError):
        em.topk_accuracy(probs, labels, 4)


def test_nll_and_mean_confidence():
    probs = np.array([[0.1, 0.5, 0.4], [0.3, 0.3, 0.4], [0.6, 0.3, 0.1]])
    labels = np.array([2, 1, 2])
    want = -(math.log(0.4) + math.log(0.3) + math.log(0.1)) / 3
    assert em.nll(probs, labels) == pytest.approx(want)
    conf = em.mean_confidence(probs, labels)
    assert conf["correct"] is None  # nothing is right
    assert conf["wrong"] == pytest.approx(0.5)
    conf = em.mean_confidence(probs, np.array([1, 2, 0]))
    assert conf["wrong"] is None and conf["correct"] == pytest.approx(0.5)


def test_softmax_is_stable():
    p = em.softmax(np.array([[1000.0, 1000.0], [0.0, math.log(3.0)]]))
    np.testing.assert_allclose(p, [[0.5, 0.5], [0.25, 0.75]])


def test_summarize_is_consistent():
    probs = np.eye(3)[PREDS] * 0.7 + 0.1
    m = em.summarize(probs, LABELS, ["a", "b", "c"])
    assert m["num_examples"] == 6 and m["num_classes"] == 3
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["top_k_accuracy"]["1"] == pytest.approx(4 / 6)
    assert set(m["top_k_accuracy"]) == {"1", "2", "3"}
    assert m["confusion_matrix"] == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    assert m["per_class"]["b"] == {
        "accuracy": 1.0, "precision": pytest.approx(2 / 3), "recall": 1.0, "f1": 0.8, "support": 2,
    }  # fmt: skip
    assert m["mean_confidence_correct"] == pytest.approx(0.8)
    assert m["ece"] == pytest.approx(abs(4 / 6 - 0.8))  # one bin holds all
    assert em.top_ks(100) == (1, 2, 3, 4, 5) and em.top_ks(2) == (1, 2)
