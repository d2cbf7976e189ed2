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
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.metrics import roc_auc_score

DISTRIBUTIONS = ("uniform", "normal", "student_t")
STUDENT_T_DF = 3.0


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
    return float(roc_auc_score(labels, scores))


def draw_aurocs(sub_scores: np.ndarray, labels: np.ndarray, draws: np.ndarray) -> np.ndarray:
    """``(n,)`` AUROC of ``sub_scores (N, S) @ draws[i] (S,)`` for each of the ``(n, S)`` draws."""
    totals = np.asarray(sub_scores, dtype=np.float64) @ np.asarray(draws, dtype=np.float64).T
    return np.array([auroc(totals[:, i], labels) for i in range(totals.shape[1])])


def sub_score_aurocs(sub_scores: np.ndarray, labels: np.ndarray, names: list[str]) -> dict[str, float]:
    """AUROC of each ``(N, S)`` sub-score column alone, by name."""
    return {name: auroc(sub_scores[:, i], labels) for i, name in enumerate(names)}


@dataclass
class Selection:
    """The outcome of a Monte-Carlo weight search.

    Attributes:
        weights: ``(S,)`` the draw with the best AUROC (the first one on ties).
        index: its row in the draws.
        auroc: its AUROC on the set it was selected on.
        aurocs: ``(n,)`` every draw's AUROC on that set.
    """

    weights: np.ndarray
    index: int
    auroc: float
    aurocs: np.ndarray


def monte_carlo_select(sub_scores: np.ndarray, labels: np.ndarray, draws: np.ndarray) -> Selection:
    """Keep the draw whose weighted total separates ``labels`` best (AUROC on ``(N, S)`` sub-scores)."""
    aurocs = draw_aurocs(sub_scores, labels, draws)
    if np.isnan(aurocs).all():
        raise ValueError("weight validation needs normal and anomalous images in its set; it holds a single class")
    best = int(np.nanargmax(aurocs))
    return Selection(np.asarray(draws[best], dtype=np.float64), best, float(aurocs[best]), aurocs)
