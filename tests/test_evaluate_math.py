"""Probe math on small synthetic problems: linear probe, kNN, multi-label mAP, band stats, CI, splits."""

import json
import math

import numpy as np
import pytest

from seamo_jax.evaluate import band_stats, knn, linear_probe, multilabel, splits, stats


def _blobs(num_per_class: int, num_classes: int, dim: int, separation: float, seed: int):
    """Gaussian blobs, one per class, centres `separation` apart along random directions."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(num_classes, dim)) * separation
    labels = np.repeat(np.arange(num_classes), num_per_class)
    features = centres[labels] + rng.normal(size=(len(labels), dim))
    order = rng.permutation(len(labels))
    return features[order].astype(np.float32), labels[order]


def test_linear_probe_separable_accuracy_and_bitwise_determinism():
    train_x, train_y = _blobs(40, 4, 16, separation=3.0, seed=0)
    test_x, test_y = _blobs(20, 4, 16, separation=3.0, seed=0)  # same centres (same seed) -> same classes
    # Shift/scale features so standardisation matters.
    train_x, test_x = train_x * 50 + 1000, test_x * 50 + 1000
    runs = [linear_probe.linear_probe(train_x, train_y, test_x, test_y, num_classes=4, seed=3,
                                      l2_grid=(1e-4, 1e-2, 1.0)) for _ in range(2)]
    assert runs[0]["accuracy"] >= 0.95
    assert runs[0]["converged"]
    assert json.dumps(runs[0], sort_keys=True) == json.dumps(runs[1], sort_keys=True)


def test_linear_probe_chance_on_random_labels():
    """Shuffled labels must not be learnable: guards against test leakage into the fit."""
    rng = np.random.default_rng(1)
    train_x, test_x = rng.normal(size=(200, 8)), rng.normal(size=(400, 8))
    result = linear_probe.linear_probe(train_x, rng.integers(0, 4, 200), test_x, rng.integers(0, 4, 400),
                                       num_classes=4, l2_grid=(1e-2, 1.0))
    assert result["accuracy"] < 0.4


def test_softmax_fit_matches_optimality_condition():
    """At the optimum the gradient vanishes: X^T (p - y) / N + l2 W = 0."""
    x, y = _blobs(30, 3, 5, separation=1.0, seed=2)
    (x,) = linear_probe.standardise(x)
    l2 = 0.1
    params, info = linear_probe.fit_softmax(x, y, 3, l2, tol=1e-6, max_iter=1000)
    logits = linear_probe.predict(params, x)
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    grad_w = x.T @ (p - np.eye(3)[y]) / len(y) + l2 * params["w"]
    assert info.converged
    assert np.abs(grad_w).max() < 1e-5


def test_knn_hand_checkable():
    # Three training points on the unit circle; weights exp(cos/T).
    train = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 2.0]])  # norm does not matter: cosine
    labels = np.array([0, 1, 1])
    query = np.array([[1.0, 0.1]])
    pred, scores = knn.knn_predict(train, labels, query, num_classes=2, k=3, temperature=0.5)
    cos = np.array([1.0, 0.1, 0.1]) / np.hypot(1.0, 0.1)
    expected = np.array([np.exp(cos[0] / 0.5), np.exp(cos[1] / 0.5) + np.exp(cos[2] / 0.5)])
    np.testing.assert_allclose(scores[0], expected, rtol=1e-5)
    assert pred[0] == 0  # one close vote beats two far ones at low temperature
    # With k=1 only the nearest counts.
    _, scores_k1 = knn.knn_predict(train, labels, query, num_classes=2, k=1, temperature=0.5)
    np.testing.assert_allclose(scores_k1[0], [np.exp(cos[0] / 0.5), 0.0], rtol=1e-5)
    # High temperature -> near-uniform weights -> majority (class 1) wins.
    pred_hot, _ = knn.knn_predict(train, labels, query, num_classes=2, k=3, temperature=100.0)
    assert pred_hot[0] == 1


def test_knn_accuracy_on_blobs():
    train_x, train_y = _blobs(30, 3, 8, separation=4.0, seed=4)
    test_x, test_y = _blobs(10, 3, 8, separation=4.0, seed=4)
    assert knn.knn_accuracy(train_x, train_y, test_x, test_y, num_classes=3) >= 0.95


def test_average_precision_hand_computed():
    scores = np.array([0.9, 0.8, 0.7, 0.6])
    targets = np.array([1, 0, 1, 0])
    # Positives at ranks 1 and 3: precision 1/1 and 2/3.
    assert multilabel.average_precision(scores, targets) == pytest.approx((1.0 + 2.0 / 3.0) / 2)
    assert math.isnan(multilabel.average_precision(scores, np.zeros(4)))
    result = multilabel.mean_average_precision(np.stack([scores, -scores], 1), np.stack([targets, targets], 1))
    # Second class: ranking reversed -> positives at ranks 2 and 4 -> (1/2 + 2/4) / 2.
    assert result["macro_map"] == pytest.approx(((1 + 2 / 3) / 2 + 0.5) / 2)


def test_multilabel_probe_learns_independent_labels():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(300, 6))
    targets = np.stack([x[:, 0] > 0, x[:, 1] + x[:, 2] > 0.5, x[:, 3] < -0.5], 1).astype(np.int64)
    result = multilabel.multilabel_probe(x[:200], targets[:200], x[200:], targets[200:], l2_grid=(1e-3, 1e-1))
    assert result["macro_map"] > 0.9 and result["micro_map"] > 0.9


def test_band_statistics_shape_and_values():
    rng = np.random.default_rng(6)
    s2 = rng.integers(0, 10000, size=(3, 4, 5, 5, 13)).astype(np.uint16)
    s1 = rng.normal(-15, 5, size=(3, 4, 5, 5, 2)).astype(np.float32)
    features = band_stats.band_statistics({"s2": s2, "s1": s1}, ["s2", "s1"])
    assert features.shape == (3, 4 * 13 * 2 + 4 * 2 * 2)
    # Sample 1, season 2, band 7 of s2: mean at [2*26 + 7], std at [2*26 + 13 + 7].
    np.testing.assert_allclose(features[1, 2 * 26 + 7], s2[1, 2, :, :, 7].astype(np.float64).mean(), rtol=1e-6)
    np.testing.assert_allclose(features[1, 2 * 26 + 13 + 7], s2[1, 2, :, :, 7].astype(np.float64).std(), rtol=1e-6)
    one_season = band_stats.band_statistics({"s2": s2, "s1": s1}, ["s1"], seasons=[3])
    assert one_season.shape == (3, 4)
    np.testing.assert_allclose(one_season[0, 1], s1[0, 3, :, :, 1].mean(), rtol=1e-5)


def test_t_interval_matches_hand_computation():
    values = [0.80, 0.82, 0.84]
    # mean 0.82, s = 0.02, sem = 0.02/sqrt(3), t_{0.975, 2} = 4.302652729749464
    summary = stats.summarize(values)
    half = 4.302652729749464 * 0.02 / math.sqrt(3)
    assert summary["mean"] == pytest.approx(0.82)
    assert summary["std"] == pytest.approx(0.02)
    assert summary["ci_low"] == pytest.approx(0.82 - half)
    assert summary["ci_high"] == pytest.approx(0.82 + half)
    assert stats.summarize([0.5, 0.6])["ci_low"] is None  # < 3 seeds: no interval


def test_splits_stratified_saved_and_checked(tmp_path):
    labels = np.repeat(np.arange(5), [100, 50, 20, 10, 3])
    subset = splits.load_or_create_subset(tmp_path, labels, 0.1, seed=0)
    assert set(labels[subset]) == set(range(5))       # every class kept, even the 3-sample one
    assert np.sum(labels[subset] == 0) == 10
    again = splits.load_or_create_subset(tmp_path, labels, 0.1, seed=0)
    np.testing.assert_array_equal(subset, again)
    assert not np.array_equal(subset, splits.stratified_subset(labels, 0.1, seed=1))
    with pytest.raises(ValueError, match="different labels"):
        splits.load_or_create_subset(tmp_path, labels[::-1], 0.1, seed=0)
    keep, held = splits.stratified_holdout(labels, 0.2, seed=0)
    assert len(np.intersect1d(keep, held)) == 0 and len(keep) + len(held) == len(labels)
    assert np.sum(labels[held] == 4) == 1


def test_report_says_deterministic_instead_of_a_zero_spread():
    from seamo_jax.evaluate import report

    def row(metric, values):
        return {"input": "S2", "encoder": "pretrained", "metric": metric, "label_fraction": 1.0,
                "mean": float(np.mean(values)), "n": len(values), "ci_half_width": 0.01,
                "per_seed": [{"seed": i, "value": v} for i, v in enumerate(values)]}

    table = report.markdown_table({"results": [row("knn_top1", [0.5, 0.5, 0.5]), row("linear_top1", [0.5, 0.6, 0.7])]})
    assert "50.00 (deterministic: no seed spread)" in table
    assert "60.00 ± 1.00" in table
