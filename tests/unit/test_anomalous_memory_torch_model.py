"""Anomalous-memory maths: mask coverage, which windows feed which memory, per-scale maxima, fusion."""

import pytest
import torch
from torch.nn import functional as F

from fsad.scorers.anomalous_memory.torch_model import (
    anomalous_memory_scores,
    anomalous_similarity_scores,
    build_dual_memory,
    fused_map,
    patch_coverage,
    split_by_coverage,
    sub_score_names,
    weighted_total,
)
from fsad.scorers.winclip.torch_model import class_scores

from .feature_fixtures import random_features as shared_random_features

GRID, DIM, WIDTH = 4, 6, 8


def random_features(n, window_sizes=(2, 3), seed=0):
    return shared_random_features(n, GRID, WIDTH, DIM, window_sizes, seed)


def hand_made_mask():
    """16x16 pixels on a 4x4 grid (4 px patches): patch (0, 0) fully anomalous, patch (0, 1) half."""
    mask = torch.zeros(16, 16)
    mask[0:4, 0:4] = 1
    mask[0:4, 4:6] = 1
    return mask


def test_patch_coverage_is_the_share_of_anomalous_pixels_per_patch():
    coverage = patch_coverage(hand_made_mask(), GRID)
    expected = torch.zeros(GRID, GRID)
    expected[0, 0], expected[0, 1] = 1.0, 0.5
    assert torch.allclose(coverage, expected)


def test_patch_coverage_squashes_a_wide_mask_to_the_square_input_like_the_preprocessing():
    mask = torch.zeros(16, 32)
    mask[:, :8] = 1  # the left quarter of the image is the left quarter of the resized input
    coverage = patch_coverage(mask, GRID)
    assert torch.equal(coverage[:, 0], torch.ones(GRID)) and coverage.sum() == GRID


def test_patches_at_or_above_threshold_are_anomalous_and_untouched_patches_are_normal():
    coverage = patch_coverage(hand_made_mask(), GRID).reshape(-1)
    choice = split_by_coverage(coverage, threshold=0.5)
    assert choice.anomalous == [0, 1]
    assert choice.normal == list(range(2, 16))
    assert not choice.anomalous_fallback


def test_without_a_window_reaching_the_threshold_the_most_covered_windows_are_anomalous():
    from fsad.backbones.windows import window_coverage

    coverage = window_coverage(GRID, 2, patch_coverage(hand_made_mask(), GRID))
    # window 0 covers patches 0, 1, 4, 5 -> (1 + 0.5) / 4; window 1 covers 1, 2, 5, 6 -> 0.5 / 4
    assert torch.allclose(coverage[:2], torch.tensor([0.375, 0.125]))
    choice = split_by_coverage(coverage, threshold=0.5)
    assert choice.anomalous_fallback and choice.anomalous == [0]
    assert choice.normal == list(range(2, 9))  # window 1 touches the defect: in neither memory


def test_partial_windows_can_be_put_into_the_reference_memory():
    coverage = torch.tensor([0.375, 0.125, 0.0, 0.0])
    choice = split_by_coverage(coverage, threshold=0.3, partial_windows="normal")
    assert choice.anomalous == [0] and choice.normal == [1, 2, 3]


def test_when_every_window_touches_the_defect_the_least_covered_form_the_reference_memory():
    choice = split_by_coverage(torch.tensor([0.9, 0.2, 0.1, 0.1]), threshold=0.5)
    assert choice.anomalous == [0] and choice.normal == [2, 3] and choice.normal_fallback


def test_a_single_window_scale_serves_both_memories_with_both_fallbacks_flagged():
    choice = split_by_coverage(torch.tensor([0.04]), threshold=0.5)
    assert choice.anomalous == [0] and choice.normal == [0]
    assert choice.anomalous_fallback and choice.normal_fallback


def test_an_empty_mask_and_an_unknown_policy_are_refused():
    with pytest.raises(ValueError, match="covers no patch"):
        split_by_coverage(torch.zeros(4), threshold=0.5)
    with pytest.raises(ValueError, match="partial_windows"):
        split_by_coverage(torch.ones(4), threshold=0.5, partial_windows="both")


def test_dual_memory_holds_the_normalised_embeddings_of_the_chosen_windows():
    sample = random_features(1)
    memory = build_dual_memory(sample, hand_made_mask(), [2, 3], coverage_threshold=0.5)
    assert torch.allclose(memory.anomalous["patch"], F.normalize(sample.patch_tokens[0, [0, 1]], dim=-1))
    assert torch.allclose(memory.reference["patch"], F.normalize(sample.patch_tokens[0, 2:], dim=-1))
    assert torch.allclose(memory.anomalous["w2"], F.normalize(sample.windows[2][0, [0]], dim=-1))
    assert memory.reference["w2"].shape[0] == 7
    # 3x3 windows: window 0 covers patches 0..2 of rows 0..2 -> 1.5 / 9; window 1 -> 0.5 / 9; 2 and 3 clean
    assert memory.choices["w3"].anomalous == [0] and memory.choices["w3"].normal == [2, 3]


def test_nine_sub_scores_are_named_in_weight_order():
    assert sub_score_names([2, 3, 7]) == [
        "zero_shot",
        "reference_patch", "reference_w2", "reference_w3", "reference_w7",
        "anomalous_patch", "anomalous_w2", "anomalous_w3", "anomalous_w7",
    ]


def test_each_sub_score_is_the_maximum_of_its_own_scale_map_before_any_averaging():
    memory = build_dual_memory(random_features(1, seed=1), hand_made_mask(), [2, 3], 0.5)
    test = random_features(3, seed=2)
    text = torch.randn(2, DIM)
    out = anomalous_memory_scores(test, memory, text, [2, 3])
    assert out.sub_scores.shape == (3, 7) and out.maps.shape == (3, 7, GRID, GRID)
    assert torch.allclose(out.sub_scores[:, 1:], out.maps[:, 1:].amax(dim=(-2, -1)))
    assert torch.allclose(out.sub_scores[:, 0], class_scores(test.image_embeddings, text))
    reference_maps = out.maps[:, 1:4]
    assert not torch.allclose(out.sub_scores[:, 1:4].mean(dim=1), reference_maps.mean(dim=1).amax(dim=(-2, -1)))


def test_a_test_patch_equal_to_a_stored_defect_scores_one_and_a_normal_patch_zero():
    sample = random_features(1, seed=3)
    memory = build_dual_memory(sample, hand_made_mask(), [2, 3], 0.5)
    out = anomalous_memory_scores(sample, memory, torch.randn(2, DIM), [2, 3])
    patch_maps = dict(zip(sub_score_names([2, 3]), out.maps[0]))
    assert torch.isclose(patch_maps["anomalous_patch"].reshape(-1)[0], torch.tensor(1.0))
    assert torch.allclose(patch_maps["reference_patch"].reshape(-1)[2:], torch.zeros(14), atol=1e-6)
    scores = anomalous_similarity_scores(torch.tensor([[[1.0, 0.0], [-1.0, 0.0]]]), torch.tensor([[1.0, 0.0]]))
    assert torch.allclose(scores, torch.tensor([[1.0, 0.0]]))


def test_weighted_total_and_fused_map_use_the_same_weights():
    sub_scores = torch.tensor([[1.0, 2.0, 3.0]])
    maps = torch.arange(12.0).reshape(1, 3, 2, 2)
    weights = torch.tensor([0.5, 0.25, 0.25])
    assert torch.allclose(weighted_total(sub_scores, weights), torch.tensor([1.75]))
    assert torch.allclose(fused_map(maps, weights), 0.5 * maps[:, 0] + 0.25 * maps[:, 1] + 0.25 * maps[:, 2])
