"""DevPrompt's deviation, Top-K selection and deviation loss against hand computations."""

import math

import pytest
import torch

from fsad.scorers.devprompt.deviation import deviation_loss, image_deviation, patch_deviations, reference_statistics, top_k_count
from fsad.scorers.devprompt.torch_model import calibrated_scoring, devprompt_scores


def test_reference_statistics_come_from_standard_normal_draws_and_repeat_with_the_seed():
    mu, sigma = reference_statistics(5000, torch.Generator().manual_seed(3))
    # 5,000 draws: the mean is within 4 standard errors (4 / sqrt(5000) = 0.057) of 0, the std as close to 1
    assert abs(float(mu)) < 0.057 and abs(float(sigma) - 1) < 0.057
    again = reference_statistics(5000, torch.Generator().manual_seed(3))
    assert (mu, sigma) == again


def test_patch_deviation_is_the_absolute_z_score_against_the_reference():
    deviations = patch_deviations(torch.tensor([0.5, -1.5, 3.0]), 0.5, 2.0)
    torch.testing.assert_close(deviations, torch.tensor([0.0, 1.0, 1.25]))


@pytest.mark.parametrize(("patches", "ratio", "k"), [(225, 0.1, 22), (225, 0.2, 45), (225, 0.3, 67), (49, 0.1, 4), (5, 0.1, 1)])
def test_top_k_keeps_the_floor_of_the_share_of_patches_and_at_least_one(patches, ratio, k):
    assert top_k_count(patches, ratio) == k


def test_image_deviation_averages_the_k_largest_deviations_not_the_largest_raw_scores():
    # raw scores -4, 1, 0, 3 around mu = 0: deviations 4, 1, 0, 3; the two largest are 4 and 3 (not 3 and 1)
    deviations = patch_deviations(torch.tensor([[-4.0, 1.0, 0.0, 3.0], [1.0, 1.0, 1.0, 1.0]]), 0.0, 1.0)
    torch.testing.assert_close(image_deviation(deviations, 2), torch.tensor([3.5, 1.0]))
    torch.testing.assert_close(image_deviation(deviations, 1), torch.tensor([4.0, 1.0]))


def test_deviation_loss_is_eq_8s_plain_batch_mean_by_default():
    # terms: normal 0.1 * 0.5, 0.1 * 2.0; anomalous max(0, 5 - 6), max(0, 5 - 3): (0.05 + 0.2 + 0 + 2) / 4
    loss = deviation_loss(torch.tensor([0.5, 2.0, 6.0, 3.0]), torch.tensor([0, 0, 1, 1]), margin=5.0, normal_weight=0.1)
    assert float(loss) == pytest.approx(2.25 / 4)
    # one normal against three anomalous images weighs a quarter: (2 + 1 + 1 + 1) / 4
    assert float(deviation_loss(torch.tensor([2.0, 4.0, 4.0, 4.0]), torch.tensor([0, 1, 1, 1]))) == pytest.approx(1.25)
    with pytest.raises(ValueError, match="unknown deviation_average 'median'"):
        deviation_loss(torch.tensor([1.0, 2.0]), torch.tensor([0, 1]), average="median")


def test_deviation_loss_balances_the_normal_and_the_anomalous_terms():
    # normal D 0.5 and 2.0 with lambda 0.1: 0.1 * 1.25 = 0.125; anomalous D 6 and 3 with a = 5: (0 + 2) / 2 = 1
    loss = deviation_loss(torch.tensor([0.5, 2.0, 6.0, 3.0]), torch.tensor([0, 0, 1, 1]), margin=5.0, normal_weight=0.1, average="balanced")
    assert float(loss) == pytest.approx((0.125 + 1.0) / 2)
    # one normal against three anomalous images weighs as much as the three together
    loss = deviation_loss(torch.tensor([1.0, 4.0, 4.0, 4.0]), torch.tensor([0, 1, 1, 1]), average="balanced")
    assert float(loss) == pytest.approx((1.0 + 1.0) / 2)
    loss = deviation_loss(torch.tensor([2.0, 4.0, 4.0, 4.0]), torch.tensor([0, 1, 1, 1]), average="balanced")
    assert float(loss) == pytest.approx((2.0 + 1.0) / 2)
    with pytest.raises(ValueError, match="normal and anomalous"):
        deviation_loss(torch.tensor([1.0, 2.0]), torch.tensor([1, 1]))


def test_calibration_maps_the_normal_similarities_to_the_reference_mean_and_std():
    similarities = torch.tensor([[0.0, 1.0, 2.0, 3.0]])
    log_scale, bias = calibrated_scoring(similarities, torch.tensor(0.2), torch.tensor(1.5))
    scores = log_scale.exp() * similarities + bias
    # unbiased std of 0, 1, 2, 3 is sqrt(5 / 3)
    assert float(log_scale.exp()) == pytest.approx(1.5 / math.sqrt(5 / 3))
    assert float(scores.mean()) == pytest.approx(0.2, abs=1e-6) and float(scores.std()) == pytest.approx(1.5)


def test_devprompt_scores_from_abnormal_and_contrast_similarities():
    prototypes = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # normal, abnormal
    patches = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]])  # cosines with abnormal: 0, 1, 0.7071
    log_scale, bias, mu, sigma = torch.tensor(math.log(2.0)), torch.tensor(-1.0), torch.tensor(0.0), torch.tensor(0.5)
    # abnormal: s = 2 c - 1 = -1, 1, 0.4142 -> d = 2, 2, 0.8284 -> top-2 mean 2
    out = devprompt_scores(patches, prototypes, log_scale, bias, mu, sigma, k=2)
    torch.testing.assert_close(out.deviations, torch.tensor([[2.0, 2.0, 2 * (2 * 0.5**0.5 - 1)]]))
    torch.testing.assert_close(out.image_deviation, torch.tensor([2.0]))
    # contrast: c = s_a - s_n = -1, 1, 0 -> s = -3, 1, -1 -> d = 6, 2, 2 -> top-2 mean 4
    out = devprompt_scores(patches, prototypes, log_scale, bias, mu, sigma, k=2, kind="contrast")
    torch.testing.assert_close(out.deviations, torch.tensor([[6.0, 2.0, 2.0]]))
    torch.testing.assert_close(out.image_deviation, torch.tensor([4.0]))
