"""The Monte-Carlo weight search chooses on the validation set only; only the oracle looks at the test set.

Validation sub-scores: only sub-score 0 separates the labels. Test sub-scores: only sub-score 1 does. A
search that peeked at the test labels would favour sub-score 1. Expected choices are computed here with
sklearn and the documented tie rule (best AUROC, then largest margin, then lowest index), on draws the
test fixes itself.
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from fsad.fusion import validation
from fsad.fusion.validation import validate_weights

NAMES = ["s0", "s1", "s2"]


def fixed_draws(n: int = 100) -> np.ndarray:
    draws = np.random.default_rng(11).uniform(size=(n, len(NAMES)))
    return draws / draws.sum(axis=1, keepdims=True)


def scores_where_one_column_separates(column: int, labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    scores = rng.random((len(labels), len(NAMES)))
    scores[:, column] += 1.5 * labels
    return scores


def expected_choice(scores: np.ndarray, labels: np.ndarray, draws: np.ndarray) -> tuple[int, list[int]]:
    """Best sklearn AUROC of ``scores @ draw``; ties by the largest (gap / pooled within-class std), then lowest index."""
    totals = scores @ draws.T
    aurocs = np.array([roc_auc_score(labels, totals[:, i]) for i in range(len(draws))])
    tied = [i for i in range(len(draws)) if np.isclose(aurocs[i], aurocs.max(), rtol=0, atol=1e-9)]
    margins = {}
    for i in tied:
        normal, anomalous = totals[labels == 0, i], totals[labels == 1, i]
        pooled = np.sqrt((normal.size * normal.var() + anomalous.size * anomalous.var()) / labels.size)
        margins[i] = (anomalous.mean() - normal.mean()) / pooled
    top = max(margins.values())
    return min(i for i in tied if np.isclose(margins[i], top, rtol=1e-9, atol=0)), tied


@pytest.fixture
def search(monkeypatch):
    draws = fixed_draws()
    monkeypatch.setattr(validation, "draw_weights", lambda distribution, n, dim, rng: draws[:n])
    rng = np.random.default_rng(3)
    val_labels, test_labels = np.repeat([0, 1], 5), np.repeat([0, 1], 30)
    val_scores = scores_where_one_column_separates(0, val_labels, rng)
    test_scores = scores_where_one_column_separates(1, test_labels, rng)
    return draws, val_scores, val_labels, test_scores, test_labels


def test_chosen_weights_follow_the_validation_set_and_the_oracle_follows_the_test_set(search):
    draws, val_scores, val_labels, test_scores, test_labels = search
    result = validate_weights(val_scores, val_labels, test_scores, test_labels, NAMES, ["uniform"], len(draws), seed=0)
    report = result.report["distributions"]["uniform"]

    chosen, tied = expected_choice(val_scores, val_labels, draws)
    oracle, _ = expected_choice(test_scores, test_labels, draws)
    assert chosen != oracle  # otherwise this test could not tell the two apart
    assert chosen != tied[0]  # the tie rule decides, not the draw order
    assert report["draw_index"] == chosen
    assert np.array_equal(result.chosen["uniform"], draws[chosen])
    assert np.argmax(result.chosen["uniform"]) == 0
    assert report["n_tied"] == len(tied) and report["tied_draws"] == tied
    assert report["oracle_draw_index"] == oracle
    assert np.allclose(report["oracle_weights"], draws[oracle], atol=1e-6)
    assert np.argmax(report["oracle_weights"]) == 1


def test_shuffling_the_test_labels_changes_the_oracle_but_not_the_choice(search):
    draws, val_scores, val_labels, test_scores, test_labels = search
    shuffled = np.random.default_rng(5).permutation(test_labels)
    first = validate_weights(val_scores, val_labels, test_scores, test_labels, NAMES, ["uniform"], len(draws), seed=0)
    second = validate_weights(val_scores, val_labels, test_scores, shuffled, NAMES, ["uniform"], len(draws), seed=0)
    before, after = first.report["distributions"]["uniform"], second.report["distributions"]["uniform"]
    assert np.array_equal(first.chosen["uniform"], second.chosen["uniform"])
    assert before["draw_index"] == after["draw_index"] and before["tied_draws"] == after["tied_draws"]
    assert before["test_auroc_per_draw"] != after["test_auroc_per_draw"]
