"""FAPrompt's losses and scores on hand-made inputs, each checked against arithmetic written out here."""

from __future__ import annotations

import math

import pytest
import torch

from fsad.scorers.faprompt.losses import (
    binary_focal_loss,
    dice_loss,
    focal_loss,
    orthogonality_loss,
    prior_loss,
    segmentation_loss,
)
from fsad.scorers.faprompt.torch_model import image_score, patch_anomaly, patch_probabilities, select_prior_patches, text_pair


def focal_by_hand(p_normal: float, p_abnormal: float, target: int, gamma: float = 2.0) -> float:
    """loss.py FocalLoss for one pixel: one-hot clamped to [1e-5, 1 - 1e-5], p_t = sum + 1e-5."""
    weights = (1 - 1e-5, 1e-5) if target == 0 else (1e-5, 1 - 1e-5)
    p_t = weights[0] * p_normal + weights[1] * p_abnormal + 1e-5
    return -((1 - p_t) ** gamma) * math.log(p_t)


def test_focal_loss_is_the_mean_over_pixels_of_the_smoothed_focal_term():
    probabilities = torch.tensor([[[[0.8, 0.3]], [[0.2, 0.7]]]])  # (1, 2, 1, 2): pixel 0 (0.8, 0.2), pixel 1 (0.3, 0.7)
    target = torch.tensor([[[0.0, 1.0]]])
    expected = (focal_by_hand(0.8, 0.2, 0) + focal_by_hand(0.3, 0.7, 1)) / 2
    assert float(focal_loss(probabilities, target)) == pytest.approx(expected, rel=1e-6)
    assert float(focal_loss(probabilities, target, gamma=0.0)) == pytest.approx(
        (focal_by_hand(0.8, 0.2, 0, 0.0) + focal_by_hand(0.3, 0.7, 1, 0.0)) / 2, rel=1e-6
    )


def test_dice_loss_is_one_minus_the_smoothed_dice_averaged_over_images():
    prediction = torch.tensor([[[0.5, 1.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 0.0]]])
    target = torch.tensor([[[1.0, 1.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 1.0]]])
    first = (2 * 1.5 + 1) / (1.5 + 2 + 1)  # intersection 0.5 + 1.0
    second = (0 + 1) / (0 + 1 + 1)
    assert float(dice_loss(prediction, target)) == pytest.approx(1 - (first + second) / 2, rel=1e-6)


def test_segmentation_loss_adds_focal_and_dice_of_both_maps_against_mask_and_its_complement():
    abnormal = torch.tensor([[[0.9, 0.2], [0.1, 0.6]]])
    probabilities = torch.stack([1 - abnormal, abnormal], dim=1)
    mask = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    focal = sum(focal_by_hand(1 - a, a, t) for a, t in [(0.9, 1), (0.2, 0), (0.1, 0), (0.6, 1)]) / 4
    dice_abnormal = 1 - (2 * (0.9 + 0.6) + 1) / (1.8 + 2 + 1)
    dice_normal = 1 - (2 * (0.8 + 0.9) + 1) / (0.1 + 0.8 + 0.9 + 0.4 + 2 + 1)
    assert float(segmentation_loss(probabilities, mask)) == pytest.approx(focal + dice_abnormal + dice_normal, rel=1e-5)


def test_orthogonality_loss_sums_absolute_cosines_over_pairs_whatever_the_lengths():
    abnormal = torch.tensor([[2.0, 0.0, 0.0], [0.0, 3.0, 0.0], [1.0, -1.0, 0.0]])
    # pairs: (e1, e2) 0; (e1, (1,-1)) 1/sqrt2; (e2, (1,-1)) |-1/sqrt2|
    assert float(orthogonality_loss(abnormal)) == pytest.approx(math.sqrt(2), rel=1e-6)
    assert float(orthogonality_loss(abnormal[:1])) == 0.0


def test_prior_loss_pulls_the_prior_of_normal_images_to_zero_only():
    bias = torch.tensor([[1.0, 2.0], [3.0, 4.0], [0.0, 1.0]])
    labels = torch.tensor([0, 1, 0])
    # normal images: mean square (1 + 4) / 2 = 2.5 and (0 + 1) / 2 = 0.5; the anomalous one is free
    assert float(prior_loss(bias, labels)) == pytest.approx(1.5)
    assert float(prior_loss(bias, labels, "sum")) == pytest.approx(3.0)
    assert float(prior_loss(bias, torch.tensor([1, 1, 1]))) == 0.0


def test_binary_focal_loss_on_a_probability_and_the_codes_logit_reading():
    score, labels = torch.tensor([0.9, 0.4]), torch.tensor([1, 0])
    bce = [-math.log(0.9), -math.log(0.6)]
    expected = sum((1 - math.exp(-b)) ** 2 * b for b in bce) / 2  # (1 - p_t)^2 * BCE
    assert float(binary_focal_loss(score, labels)) == pytest.approx(expected, rel=1e-6)
    sigmoid = [1 / (1 + math.exp(-0.9)), 1 / (1 + math.exp(-0.4))]
    bce = [-math.log(sigmoid[0]), -math.log(1 - sigmoid[1])]
    expected = sum((1 - math.exp(-b)) ** 2 * b for b in bce) / 2
    assert float(binary_focal_loss(score, labels, score_is="logit")) == pytest.approx(expected, rel=1e-6)


def test_patch_probabilities_are_a_softmax_of_cosines_over_the_temperature_with_the_prototype():
    normal = torch.tensor([1.0, 0.0])
    abnormal = torch.tensor([[0.0, 2.0], [0.0, 4.0]])  # prototype (0, 3) -> normalised (0, 1)
    text = text_pair(normal, abnormal)
    torch.testing.assert_close(text, torch.tensor([[[1.0, 0.0], [0.0, 1.0]]]))
    tokens = torch.tensor([[[1.0, 0.0], [0.6, 0.8]]])
    probabilities = patch_probabilities(tokens, text, 0.07)
    abnormal_1 = math.exp(0.8 / 0.07) / (math.exp(0.6 / 0.07) + math.exp(0.8 / 0.07))
    assert float(probabilities[0, 0, 1]) == pytest.approx(1 / (1 + math.exp(1 / 0.07)), rel=1e-5)
    assert float(probabilities[0, 1, 1]) == pytest.approx(abnormal_1, rel=1e-5)
    # Eq. 11's (p_abnormal + 1 - p_normal) / 2 is p_abnormal for two classes; levels are averaged
    torch.testing.assert_close(patch_anomaly([probabilities, probabilities.flip(-1)]), torch.full((1, 2), 0.5))


def test_dap_reads_the_k_most_abnormal_patches_or_the_first_k_as_the_public_code():
    tokens = torch.arange(12.0).reshape(1, 6, 2)
    abnormal = torch.tensor([[0.1, 0.9, 0.3, 0.8, 0.2, 0.7]])
    top = select_prior_patches(tokens, abnormal, 3, "top")
    torch.testing.assert_close(top, tokens[:, [1, 3, 5]])  # most abnormal first, as topk(sorted=True)
    torch.testing.assert_close(select_prior_patches(tokens, abnormal, 3, "first"), tokens[:, :3])
    with pytest.raises(ValueError, match="dap_patches"):
        select_prior_patches(tokens, abnormal, 7, "top")


def test_image_score_eq9_averages_the_maps_maxima_the_code_weighs_the_static_one_double():
    probability = torch.tensor([0.2])
    maxima = torch.tensor([[0.9, 0.6]])
    assert float(image_score(probability, maxima, "eq9")) == pytest.approx(0.5 * (0.2 + 0.75))
    assert float(image_score(probability, maxima, "code")) == pytest.approx(0.5 * (0.2 + (2 * 0.9 + 0.6) / 3))
    assert float(image_score(probability, maxima, "probability")) == pytest.approx(0.2)
    assert float(image_score(probability, maxima[:, :1], "code")) == pytest.approx(0.5 * (0.2 + 0.9))
