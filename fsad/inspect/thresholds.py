"""Decision thresholds from what a setup has seen (never from the images being inspected), and normal percentiles.

Each option is named, computed from one population of the setup's scores, and carries the caveat a reader needs:

- ``validation_normals``: the split's validation normals, scored now; the cleanest (never references, never tested).
- ``reference_normals``: the split's normal references, scored as if they were test images.
- ``test_normals``: the benchmark run's test-set normals (its saved scores).
- ``test_f1_max``: the threshold of the best F1 on the benchmark run's labelled test set.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

FPR_OPTIONS = ("validation_normals", "reference_normals", "test_normals")
OPTIONS = (*FPR_OPTIONS, "test_f1_max")

CAVEATS = {
    "validation_normals": "few images: with n validation normals the false-positive rate can only be a multiple of 1/n",
    "reference_normals": (
        "the references are the setup's own memory or prompts: a memory-bank method matches each one to itself, so their "
        "scores are too low and this threshold flags more normal images than the stated rate"
    ),
    "test_normals": "chosen with the benchmark's test labels; it holds while new images look like the test set's normals",
    "test_f1_max": (
        "chosen on the labelled test set at its anomaly rate; F1 depends on that rate, and a line with fewer defects "
        "gets more false alarms than the test set did"
    ),
}


@dataclass(frozen=True)
class Threshold:
    """One option: its name, its value (None when the setup has no such scores), the scores it came from."""

    option: str
    value: float | None
    n_scores: int
    fpr: float | None
    unavailable: str = ""

    @property
    def caveat(self) -> str:
        return CAVEATS[self.option]


def fpr_threshold(normal_scores: np.ndarray, fpr: float) -> float:
    """The lowest normal score ``t`` with at most ``fpr`` of ``normal_scores`` strictly above it.

    With the normals sorted ascending ``s_1 <= ... <= s_n``, ``t = s_j`` for ``j = ceil(n (1 - fpr))`` (at least 1);
    an image is anomalous when its score exceeds ``t``.
    """
    scores = np.sort(np.asarray(normal_scores, dtype=np.float64))
    if scores.size == 0:
        raise ValueError("no normal scores to set a threshold from")
    rank = max(1, math.ceil(round(scores.size * (1.0 - fpr), 9)))
    return float(scores[rank - 1])


def f1_max_threshold(scores: np.ndarray, labels: np.ndarray) -> float:
    """The score threshold of the best F1 (anomalous when ``score >= t``) on labelled ``(N,)`` scores; the lowest such
    threshold on ties."""
    from sklearn.metrics import precision_recall_curve

    labels = np.asarray(labels)
    if len(np.unique(labels)) < 2:
        raise ValueError("the F1-max threshold needs normal and anomalous test images")
    precision, recall, thresholds = precision_recall_curve(labels, np.asarray(scores, dtype=np.float64))
    denominator = precision + recall
    f1 = np.divide(2 * precision * recall, denominator, out=np.zeros_like(denominator), where=denominator > 0)[:-1]
    return float(thresholds[int(np.argmax(f1))])


def normal_percentile(scores: np.ndarray, normal_scores: np.ndarray) -> np.ndarray:
    """For each of ``scores``, the fraction of ``normal_scores`` strictly below it (0 to 1)."""
    normals = np.sort(np.asarray(normal_scores, dtype=np.float64))
    if normals.size == 0:
        raise ValueError("no normal scores to compare with")
    return np.searchsorted(normals, np.asarray(scores, dtype=np.float64), side="left") / normals.size


def thresholds(normals: dict[str, np.ndarray], test_scores: np.ndarray, test_labels: np.ndarray, fpr: float) -> list[Threshold]:
    """Every option of :data:`OPTIONS` from the setup's scores.

    Args:
        normals: option of :data:`FPR_OPTIONS` -> that population's scores (empty when the setup has none).
        test_scores, test_labels: the benchmark run's saved test scores and labels (for ``test_f1_max``).
        fpr: the false-positive rate the FPR options are set at.
    """
    options = []
    for option in FPR_OPTIONS:
        scores = normals[option]
        if len(scores):
            options.append(Threshold(option, fpr_threshold(scores, fpr), len(scores), fpr))
        else:
            options.append(Threshold(option, None, 0, fpr, f"the setup has no {option.replace('_', ' ')}"))
    if len(np.unique(test_labels)) == 2:
        options.append(Threshold("test_f1_max", f1_max_threshold(test_scores, test_labels), len(test_scores), None))
    else:
        options.append(Threshold("test_f1_max", None, len(test_scores), None, "the test set holds one class only"))
    return options


def is_anomalous(scores: np.ndarray, threshold: Threshold) -> np.ndarray:
    """The decision of ``threshold`` for each score: above an FPR threshold, or at/above the F1-max one (as its
    precision-recall curve counts it)."""
    scores = np.asarray(scores, dtype=np.float64)
    return scores >= threshold.value if threshold.option == "test_f1_max" else scores > threshold.value
