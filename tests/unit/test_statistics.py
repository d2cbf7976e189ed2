"""Bootstrap intervals, paired tests and FPR at 95 % TPR, checked against scikit-learn and hand-made cases."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score, roc_curve

from fsad.evaluation.statistics import (
    RankedPoints,
    fpr_at_tpr,
    paired_p_value,
    percentile_interval,
    stratified_resamples,
    weighted_auroc,
)


def test_weighted_auroc_equals_sklearn_with_sample_weights_and_ties() -> None:
    rng = np.random.default_rng(3)
    scores = rng.integers(0, 6, size=40).astype(float)  # many ties
    labels = rng.integers(0, 2, size=40)
    weights = rng.integers(0, 4, size=40).astype(float)
    assert weighted_auroc(scores, labels, weights) == pytest.approx(roc_auc_score(labels, scores, sample_weight=weights))
    assert weighted_auroc(scores, labels) == pytest.approx(roc_auc_score(labels, scores))


def test_hand_made_auroc_counts_ties_half() -> None:
    # normals 0, 1; anomalies 1, 2: pairs (1>0, 1=1, 2>0, 2>1) -> (1 + 0.5 + 1 + 1) / 4
    assert weighted_auroc(np.array([0.0, 1.0, 1.0, 2.0]), np.array([0, 0, 1, 1])) == pytest.approx(3.5 / 4)


def test_pixel_replicates_weight_every_pixel_of_a_resampled_image() -> None:
    rng = np.random.default_rng(0)
    maps, masks = rng.random((4, 3, 3)), rng.random((4, 3, 3)) > 0.6
    labels = np.array([0, 0, 1, 1])
    counts = stratified_resamples(labels, 5, np.random.default_rng(1))
    points = RankedPoints.of(maps.ravel(), masks.ravel(), np.repeat(np.arange(4), 9))
    for row, value in zip(counts, points.replicates(counts)):
        chosen = np.repeat(np.arange(4), row)  # the resampled images, each as often as drawn
        assert value == pytest.approx(roc_auc_score(masks[chosen].ravel(), maps[chosen].ravel()))


def test_resamples_keep_the_class_counts_and_draw_within_each_class() -> None:
    labels = np.array([0, 0, 0, 1, 1])
    counts = stratified_resamples(labels, 50, np.random.default_rng(7))
    assert (counts[:, :3].sum(axis=1) == 3).all() and (counts[:, 3:].sum(axis=1) == 2).all()
    again = stratified_resamples(labels, 50, np.random.default_rng(7))
    assert (counts == again).all()


def test_percentile_interval_is_numpys_quantiles() -> None:
    replicates = np.arange(101) / 100
    assert percentile_interval(replicates) == pytest.approx((0.025, 0.975))


def test_paired_p_value_hand_made() -> None:
    # 99 replicates all above zero: 2 * (0 + 1) / 100
    assert paired_p_value(np.full(99, 0.1)) == pytest.approx(0.02)
    # identical methods: every difference is 0, p = 1
    assert paired_p_value(np.zeros(99)) == 1.0
    # 30 of 99 at or below zero: 2 * 31 / 100
    assert paired_p_value(np.r_[np.full(30, -0.1), np.full(69, 0.2)]) == pytest.approx(0.62)


def test_fpr_at_95_tpr_matches_sklearn_roc_curve() -> None:
    rng = np.random.default_rng(5)
    labels = np.r_[np.zeros(30), np.ones(40)].astype(int)
    scores = rng.normal(size=70) + labels
    fpr, tpr, _ = roc_curve(labels, scores, drop_intermediate=False)
    assert fpr_at_tpr(scores, labels, 0.95) == pytest.approx(fpr[np.argmax(tpr >= 0.95)])


def test_fpr_at_95_tpr_hand_made() -> None:
    # anomalies 0.3, 0.6, 0.9 (TPR 95 % needs all three: threshold 0.3); normals 0.1, 0.4, 0.5, 0.95 -> 3 of 4 flagged
    scores = np.array([0.3, 0.6, 0.9, 0.1, 0.4, 0.5, 0.95])
    labels = np.array([1, 1, 1, 0, 0, 0, 0])
    assert fpr_at_tpr(scores, labels) == pytest.approx(0.75)
