"""Sub-score weights: baseline structure, random draws, Monte-Carlo selection and the validation report."""

import numpy as np
import pytest

from fsad.fusion.validation import validate_weights
from fsad.fusion.score_weights import auroc, baseline_weights, draw_weights, monte_carlo_select


def test_baseline_gives_a_third_to_zero_shot_and_a_twelfth_to_each_of_four_scales_per_memory():
    weights = baseline_weights(4)
    assert weights.shape == (9,)
    assert np.isclose(weights.sum(), 1.0)
    assert np.isclose(weights[0], 1 / 3)
    assert np.allclose(weights[1:5], 1 / 12) and np.allclose(weights[5:], 1 / 12)


@pytest.mark.parametrize("distribution", ["uniform", "normal", "student_t"])
def test_draws_have_unit_l1_norm_and_repeat_with_the_seed(distribution):
    draws = draw_weights(distribution, 100, 9, np.random.default_rng(7))
    assert draws.shape == (100, 9)
    assert np.allclose(np.abs(draws).sum(axis=1), 1.0)
    assert np.array_equal(draws, draw_weights(distribution, 100, 9, np.random.default_rng(7)))


def test_uniform_draws_are_non_negative_and_signed_distributions_are_not():
    rng = np.random.default_rng(0)
    assert (draw_weights("uniform", 50, 9, rng) >= 0).all()
    assert (draw_weights("normal", 50, 9, rng) < 0).any()
    assert (draw_weights("student_t", 50, 9, rng) < 0).any()
    with pytest.raises(ValueError, match="unknown weight distribution"):
        draw_weights("cauchy", 1, 9, rng)


def test_monte_carlo_picks_the_draw_that_weights_the_separating_sub_score():
    labels = np.array([0, 0, 1, 1])
    sub_scores = np.array([[0.1, 0.9], [0.2, 0.8], [0.8, 0.2], [0.9, 0.1]])  # column 0 separates, column 1 inverts
    draws = np.array([[0.2, 0.8], [0.9, 0.1], [0.5, 0.5], [1.0, 0.0]])
    selection = monte_carlo_select(sub_scores, labels, draws)
    # both perfect draws give totals affine in column 0 (column 1 = 1 - column 0), hence equal margins: lowest index
    assert selection.index == 1
    assert selection.tied == [1, 3]
    assert selection.auroc == 1.0
    assert np.allclose(selection.aurocs, [0.0, 1.0, 0.5, 1.0])


def test_ties_at_the_best_auroc_go_to_the_draw_with_the_largest_margin():
    labels = np.array([0, 0, 1, 1])
    # both columns separate; column 1 by a wider gap relative to its spread
    sub_scores = np.array([[0.0, 0.0], [0.1, 0.05], [0.5, 1.0], [0.6, 1.05]])
    draws = np.array([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5], [-1.0, 0.0]])
    selection = monte_carlo_select(sub_scores, labels, draws)
    # margins by hand: column 0 gap 0.5 / std 0.05; column 1 gap 1.0 / std 0.025; the mean gap 0.75 / std 0.0375
    assert np.allclose(selection.margins[:3], [10.0, 40.0, 20.0])
    assert selection.tied == [0, 1, 2]
    assert selection.index == 1 and np.array_equal(selection.weights, [0.0, 1.0])


def test_the_validation_report_counts_the_draws_tied_at_the_best_auroc():
    rng = np.random.default_rng(4)
    val_labels, test_labels = np.repeat([0, 1], 5), np.repeat([0, 1], 10)
    val_scores = rng.random((10, 3)) + val_labels[:, None] * np.array([2.0, 0.0, 0.0])  # s0 separates perfectly
    test_scores = rng.random((20, 3))
    result = validate_weights(val_scores, val_labels, test_scores, test_labels, ["s0", "s1", "s2"], ["uniform"], 50, seed=0)
    uniform = result.report["distributions"]["uniform"]
    assert uniform["validation_auroc"] == 1.0
    assert uniform["n_tied"] == len(uniform["tied_draws"]) > 1
    assert uniform["draw_index"] in uniform["tied_draws"]
    assert "largest validation margin" in result.report["tie_break"]


def test_monte_carlo_refuses_a_single_class_validation_set():
    with pytest.raises(ValueError, match="single class"):
        monte_carlo_select(np.ones((3, 2)), np.zeros(3), np.ones((2, 2)))
    assert np.isnan(auroc(np.ones(3), np.ones(3)))


def test_validation_report_holds_choice_oracle_and_per_draw_test_aurocs():
    rng = np.random.default_rng(1)
    names = [f"s{i}" for i in range(3)]
    val_labels, test_labels = np.array([0] * 5 + [1] * 5), np.array([0] * 10 + [1] * 10)
    val_scores = rng.random((10, 3)) + val_labels[:, None] * np.array([1.0, 0.0, 0.0])
    test_scores = rng.random((20, 3)) + test_labels[:, None] * np.array([0.0, 1.0, 0.0])
    result = validate_weights(val_scores, val_labels, test_scores, test_labels, names, ["uniform", "normal"], 30, seed=3)
    assert set(result.chosen) == {"uniform", "normal"}
    report = result.report
    assert report["validation_sub_score_auroc"]["s0"] == 1.0
    uniform = report["distributions"]["uniform"]
    assert len(uniform["test_auroc_per_draw"]) == 30
    assert uniform["oracle_test_auroc"] == max(uniform["test_auroc_per_draw"])
    chosen_test = uniform["test_auroc_per_draw"][uniform["draw_index"]]
    assert chosen_test <= uniform["oracle_test_auroc"]
    again = validate_weights(val_scores, val_labels, test_scores, test_labels, names, ["uniform", "normal"], 30, seed=3)
    assert again.report == report
