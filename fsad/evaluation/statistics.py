"""Paired statistics of scored test sets (numpy): bootstrap confidence intervals, paired bootstrap tests, FPR at a TPR.

Every method of a benchmark scores the same test images, so one set of resampled indices per (dataset, category,
setting, run) serves all of them: the bootstrap replicates of two methods are paired, and the replicate differences
give a paired test.

- :func:`stratified_resamples`: ``B`` resamples of the test images drawn with replacement within each label, so
  every replicate keeps the class counts (its AUROC is always defined);
- :func:`weighted_auroc`: AUROC where each point counts ``weight`` times (a resample is a weighting of the images,
  and of their pixels); ties count one half, as in scikit-learn's ``roc_auc_score(sample_weight=...)``;
- :class:`RankedPoints`: the sort of a score vector done once, so each replicate costs one ``bincount``;
- :func:`percentile_interval`, :func:`paired_p_value`: the percentile interval and the two-sided bootstrap p-value;
- :func:`fpr_at_tpr`: the false-positive rate at the lowest threshold that reaches a true-positive rate.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def stratified_resamples(labels: np.ndarray, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    """``(B, N)`` image counts: replicate ``b`` draws each label's images with replacement, as many as it holds."""
    labels = np.asarray(labels).astype(int)
    counts = np.zeros((n_resamples, len(labels)), dtype=np.int64)
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        drawn = rng.integers(0, len(members), size=(n_resamples, len(members)))
        for b in range(n_resamples):
            counts[b] += np.bincount(members[drawn[b]], minlength=len(labels))
    return counts


@dataclass
class RankedPoints:
    """Scored points (images, or the pixels of images) sorted once; each point belongs to one image.

    Attributes:
        group: ``(P,)`` tie group of each point in ascending score order (equal scores, one group).
        positive: ``(P,)`` the points' labels in that order, as bool.
        image: ``(P,)`` the image each point belongs to, in that order.
        n_groups: number of distinct scores.
    """

    group: np.ndarray
    positive: np.ndarray
    image: np.ndarray
    n_groups: int

    @classmethod
    def of(cls, scores: np.ndarray, labels: np.ndarray, image: np.ndarray | None = None) -> "RankedPoints":
        """Rank ``(P,)`` scores with ``(P,)`` 0/1 labels; ``image`` (``(P,)`` image index) defaults to one point per image."""
        scores, labels = np.asarray(scores, dtype=np.float64).ravel(), np.asarray(labels).astype(bool).ravel()
        image = np.arange(len(scores)) if image is None else np.asarray(image).ravel()
        order = np.argsort(scores, kind="stable")
        unique, group = np.unique(scores[order], return_inverse=True)
        return cls(group, labels[order], image[order], len(unique))

    def auroc(self, image_weights: np.ndarray) -> float:
        """AUROC with each point weighted by its image's ``(N,)`` weight."""
        weights = np.asarray(image_weights, dtype=np.float64)[self.image]
        positives = np.bincount(self.group, weights * self.positive, minlength=self.n_groups)
        negatives = np.bincount(self.group, weights * ~self.positive, minlength=self.n_groups)
        below = np.cumsum(negatives) - negatives
        total = positives.sum() * negatives.sum()
        return float(np.sum(positives * (below + 0.5 * negatives)) / total) if total > 0 else float("nan")

    def replicates(self, counts: np.ndarray) -> np.ndarray:
        """``(B,)`` AUROC of each replicate of ``(B, N)`` image counts (:func:`stratified_resamples`)."""
        return np.array([self.auroc(row) for row in counts])


def weighted_auroc(scores: np.ndarray, labels: np.ndarray, weights: np.ndarray | None = None) -> float:
    """AUROC of ``(P,)`` scores, each point counted ``weights`` times (ones by default); NaN for a single class."""
    scores = np.asarray(scores).ravel()
    return RankedPoints.of(scores, labels).auroc(np.ones(len(scores)) if weights is None else np.asarray(weights).ravel())


def percentile_interval(replicates: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """The ``level`` percentile interval of ``(B,)`` bootstrap replicates (NaN when any replicate is NaN)."""
    replicates = np.asarray(replicates, dtype=np.float64)
    if np.isnan(replicates).any():
        return float("nan"), float("nan")
    tail = (1 - level) / 2
    low, high = np.quantile(replicates, [tail, 1 - tail])
    return float(low), float(high)


def paired_p_value(differences: np.ndarray) -> float:
    """Two-sided p-value of "no difference" from ``(B,)`` paired bootstrap differences (A minus B).

    ``min(1, 2 * min(#(d <= 0) + 1, #(d >= 0) + 1) / (B + 1))``: the share of replicates on the far side of zero,
    doubled, with the ``+1`` that keeps a bootstrap p-value above zero.
    """
    differences = np.asarray(differences, dtype=np.float64)
    if np.isnan(differences).any():
        return float("nan")
    n = len(differences)
    at_most, at_least = np.sum(differences <= 0) + 1, np.sum(differences >= 0) + 1
    return float(min(1.0, 2 * min(at_most, at_least) / (n + 1)))


def fpr_at_tpr(scores: np.ndarray, labels: np.ndarray, tpr: float = 0.95) -> float:
    """False-positive rate at the highest threshold whose true-positive rate reaches ``tpr`` (``score >= t`` flags).

    NaN when ``labels`` hold a single class.
    """
    scores, labels = np.asarray(scores, dtype=np.float64), np.asarray(labels).astype(bool)
    if labels.all() or not labels.any():
        return float("nan")
    thresholds = np.unique(scores)[::-1]
    flagged = scores[None, :] >= thresholds[:, None]
    rates = flagged[:, labels].mean(axis=1)
    first = int(np.argmax(rates >= tpr - 1e-12))
    return float(flagged[first, ~labels].mean())
