"""Weights of the sub-scores: the paper's baseline, random draws and Monte-Carlo selection by AUROC.

The anomalous-samples paper combines ``S`` sub-scores ``s`` into ``w . s``. Baseline: one third each for
the zero-shot score, the mean of the reference-memory scales and the mean of the anomalous-memory
scales. Validation draws ``n`` random weight vectors and keeps the one with the best AUROC on a labelled
set (augmentations of the training images; on the test set the same search gives the oracle bound).

Draws (pick documented here, the paper names only the distributions):

- ``uniform``: ``U(0, 1)`` per weight -- non-negative, the paper's well-behaved case;
- ``normal``: ``N(0, 1)`` per weight -- signed, so a sub-score may count against anomaly;
- ``student_t``: Student's t with ``STUDENT_T_DF = 3`` degrees of freedom -- signed, heavy tails.

Every draw is divided by the sum of its absolute values. AUROC does not change under positive scaling,
so this only makes weights comparable across draws (uniform draws then sum to 1 like the baseline).

Ties: with a handful of augmented validation images many draws separate the classes perfectly (AUROC 1.0),
and "the first such draw" would be an arbitrary pick. :data:`TIE_BREAK` states the rule used instead: among
the draws within :data:`AUROC_TIE_TOLERANCE` of the best AUROC, the largest validation margin wins (mean
anomalous total minus mean normal total, over the pooled within-class std of the totals: the draw that
separates the classes by the widest gap), then the lowest draw index. The margin, like AUROC, does not
change when a draw is scaled by a positive factor.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DISTRIBUTIONS = ("uniform", "normal", "student_t")
STUDENT_T_DF = 3.0
AUROC_TIE_TOLERANCE = 1e-9
MARGIN_TIE_TOLERANCE = 1e-9
TIE_BREAK = (
    "ties at the best validation AUROC go to the draw with the largest validation margin (mean anomalous minus "
    "mean normal weighted total, over the pooled within-class std of the totals), then to the lowest draw index"
)


def baseline_weights(n_scales: int) -> np.ndarray:
    """``(1 + 2 * n_scales,)``: 1/3 for zero-shot, then ``1 / (3 n_scales)`` for each reference and each anomalous scale."""
    if n_scales < 1:
        raise ValueError(f"n_scales must be at least 1, got {n_scales}")
    per_scale = np.full(n_scales, 1 / (3 * n_scales))
    return np.concatenate([[1 / 3], per_scale, per_scale])


def draw_weights(distribution: str, n: int, dim: int, rng: np.random.Generator) -> np.ndarray:
    """``(n, dim)`` weight vectors drawn from ``distribution``, each with unit L1 norm."""
    if distribution == "uniform":
        draws = rng.uniform(0.0, 1.0, size=(n, dim))
    elif distribution == "normal":
        draws = rng.standard_normal(size=(n, dim))
    elif distribution == "student_t":
        draws = rng.standard_t(STUDENT_T_DF, size=(n, dim))
    else:
        raise ValueError(f"unknown weight distribution {distribution!r}; use one of {DISTRIBUTIONS}")
    return draws / np.abs(draws).sum(axis=1, keepdims=True)


def auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Image AUROC, NaN when ``labels`` hold a single class."""
    labels = np.asarray(labels)
    if len(np.unique(labels)) < 2:
        return float("nan")
    from sklearn.metrics import roc_auc_score  # imported here: score jobs that never validate start faster

    return float(roc_auc_score(labels, scores))


def weighted_totals(sub_scores: np.ndarray, draws: np.ndarray) -> np.ndarray:
    """``(N, n)``: ``sub_scores (N, S) @ draws[i] (S,)`` for each of the ``(n, S)`` draws."""
    return np.asarray(sub_scores, dtype=np.float64) @ np.asarray(draws, dtype=np.float64).T


def draw_aurocs(sub_scores: np.ndarray, labels: np.ndarray, draws: np.ndarray) -> np.ndarray:
    """``(n,)`` AUROC of ``sub_scores (N, S) @ draws[i] (S,)`` for each of the ``(n, S)`` draws."""
    totals = weighted_totals(sub_scores, draws)
    return np.array([auroc(totals[:, i], labels) for i in range(totals.shape[1])])


def sub_score_aurocs(sub_scores: np.ndarray, labels: np.ndarray, names: list[str]) -> dict[str, float]:
    """AUROC of each ``(N, S)`` sub-score column alone, by name."""
    return {name: auroc(sub_scores[:, i], labels) for i, name in enumerate(names)}


def draw_margins(sub_scores: np.ndarray, labels: np.ndarray, draws: np.ndarray) -> np.ndarray:
    """``(n,)`` separation margin of each of the ``(n, S)`` draws on ``(N, S)`` sub-scores.

    margin = (mean anomalous total - mean normal total) / sqrt((N0 var0 + N1 var1) / (N0 + N1)), variances
    with ``ddof=0``; ``+inf`` (``-inf``) when the totals are constant within each class and the anomalous
    mean is higher (not higher).
    """
    totals = weighted_totals(sub_scores, draws)
    labels = np.asarray(labels)
    anomalous, normal = totals[labels == 1], totals[labels == 0]
    gap = anomalous.mean(axis=0) - normal.mean(axis=0)
    pooled = np.sqrt((len(anomalous) * anomalous.var(axis=0) + len(normal) * normal.var(axis=0)) / len(labels))
    return np.where(pooled > 0, gap / np.where(pooled > 0, pooled, 1.0), np.where(gap > 0, np.inf, -np.inf))


@dataclass
class Selection:
    """The outcome of a Monte-Carlo weight search.

    Attributes:
        weights: ``(S,)`` the chosen draw (best AUROC; ties broken by :data:`TIE_BREAK`).
        index: its row in the draws.
        auroc: its AUROC on the set it was selected on.
        aurocs: ``(n,)`` every draw's AUROC on that set.
        tied: indices of the draws tied at the best AUROC (the chosen one among them), ascending.
        margins: ``(n,)`` every draw's margin on that set (:func:`draw_margins`).
    """

    weights: np.ndarray
    index: int
    auroc: float
    aurocs: np.ndarray
    tied: list[int]
    margins: np.ndarray


def break_tie(aurocs: np.ndarray, margins: np.ndarray) -> tuple[int, list[int]]:
    """``(chosen index, tied indices)``: the best ``(n,)`` AUROC, ties by the largest margin, then the lowest index.

    Margins equal up to a relative :data:`MARGIN_TIE_TOLERANCE` count as equal, so rounding noise never
    overrides the index rule (draws whose totals are affine in one another have the same margin).
    """
    tied = [int(i) for i in np.flatnonzero(aurocs >= np.nanmax(aurocs) - AUROC_TIE_TOLERANCE)]
    top = margins[tied].max()
    tolerance = MARGIN_TIE_TOLERANCE * abs(top) if np.isfinite(top) else 0.0
    return next(i for i in tied if margins[i] >= top - tolerance), tied


def monte_carlo_select(sub_scores: np.ndarray, labels: np.ndarray, draws: np.ndarray) -> Selection:
    """Keep the draw whose weighted total separates ``labels`` best (AUROC on ``(N, S)`` sub-scores, ties by :data:`TIE_BREAK`)."""
    aurocs = draw_aurocs(sub_scores, labels, draws)
    if np.isnan(aurocs).all():
        raise ValueError("weight validation needs normal and anomalous images in its set; it holds a single class")
    margins = draw_margins(sub_scores, labels, draws)
    best, tied = break_tie(aurocs, margins)
    return Selection(np.asarray(draws[best], dtype=np.float64), best, float(aurocs[best]), aurocs, tied, margins)
