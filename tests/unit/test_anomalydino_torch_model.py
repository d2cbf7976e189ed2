"""AnomalyDINO's formulas on hand-made tensors: cosine distances to the memory, the mean of the top 1 %, the
rotations of the references, the PCA background mask and the map."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage

from fsad.scorers.anomalydino.scorer import masks_category, rotated
from fsad.scorers.anomalydino.torch_model import ROTATIONS, anomaly_maps, first_component, foreground_masks, memory_bank, patch_distances, top_fraction_mean
from fsad.maps import gaussian_blur, reflected_index


def test_each_patch_scores_one_minus_the_cosine_of_its_nearest_memory_token():
    memory = memory_bank(torch.tensor([[[1.0, 0.0], [0.0, 2.0]]]))  # (K=1, P=2, C=2)
    tokens = torch.tensor([[[3.0, 0.0], [1.0, 1.0], [-1.0, 0.0]]])
    distances = patch_distances(tokens, memory)
    torch.testing.assert_close(distances, torch.tensor([[0.0, 1 - 2**-0.5, 1.0]]))


def test_the_image_score_is_the_mean_of_the_top_one_percent_and_at_least_the_maximum():
    scores = torch.arange(1000.0).reshape(1, 1000) / 1000  # 1 % of 1000: the 10 largest
    assert float(top_fraction_mean(scores)) == pytest.approx(np.mean(np.arange(990, 1000)) / 1000)
    few = torch.tensor([[0.1, 0.9, 0.3]])  # int(3 * 0.01) = 0 patches: the maximum, as the code's mean_top1p
    assert float(top_fraction_mean(few)) == pytest.approx(0.9)
    assert float(top_fraction_mean(few, fraction=0.67)) == pytest.approx(0.6)  # int(2.01) = 2: (0.9 + 0.3) / 2


def test_the_rotations_are_the_codes_eight_angles_and_quarter_turns_are_exact():
    assert (0, *ROTATIONS) == (0, 45, 90, 135, 180, 225, 270, 315)
    pixels = np.random.default_rng(0).integers(0, 256, (20, 20, 3), dtype=np.uint8)
    image = Image.fromarray(pixels)
    # counter-clockwise, as OpenCV's getRotationMatrix2D with a positive angle
    assert np.array_equal(np.asarray(rotated(image, 90)), np.rot90(pixels, 1))
    assert np.array_equal(np.asarray(rotated(image, 180)), np.rot90(pixels, 2))
    assert np.array_equal(np.asarray(rotated(image, 270)), np.rot90(pixels, 3))


def test_a_45_degree_turn_fills_its_corners_with_the_mirrored_image_not_black():
    pixels = np.full((40, 40, 3), 200, np.uint8)
    turned = np.asarray(rotated(Image.fromarray(pixels), 45))
    assert turned.shape == (40, 40, 3) and turned.min() == 200


def test_the_first_component_follows_scikit_learns_sign_and_scores():
    from sklearn.decomposition import PCA

    tokens = torch.randn(30, 5, generator=torch.Generator().manual_seed(0)) + torch.tensor([0.0, 3.0, 0.0, 0.0, 0.0])
    tokens[:, 2] += torch.linspace(-8, 8, 30)  # one dominant direction
    theirs = PCA(n_components=1, svd_solver="full").fit_transform(tokens.numpy())[:, 0]
    np.testing.assert_allclose(first_component(tokens).numpy(), theirs, atol=1e-4)


def tokens_along(component: torch.Tensor, width: int = 4) -> torch.Tensor:
    """``(P, width)`` tokens whose first principal component scores are ``component`` (a second direction carries small noise)."""
    noise = torch.randn(len(component), generator=torch.Generator().manual_seed(1)) * 0.01
    return torch.stack([component, noise, *[torch.zeros_like(component)] * (width - 2)], dim=1)


def test_the_mask_thresholds_the_first_component_then_dilates_and_closes():
    grid = 10
    component = torch.full((grid, grid), -1.0)
    component[3:7, 3:7] = 40.0  # a 4x4 object in the centre (16 of the centre crop's 36 patches: more than 35 %)
    mask = foreground_masks(tokens_along(component.reshape(-1))[None], grid, threshold=10.0)[0].reshape(grid, grid)
    # dilated once by the 3x3 square (closing changes nothing on a filled square): rows and columns 2..7
    expected = torch.zeros(grid, grid, dtype=torch.bool)
    expected[2:8, 2:8] = True
    assert torch.equal(mask, expected)


def test_when_the_centre_is_mostly_background_the_sign_flips():
    grid = 10
    component = torch.zeros(grid, grid)
    component[3:7, 3:7] = -60.0  # the object lies on the negative side: centred, it scores -50.4 and the rest 9.6
    tokens = tokens_along(component.reshape(-1))
    scores = first_component(tokens).reshape(grid, grid)
    assert scores[5, 5] < -50 and scores[0, 0] == pytest.approx(9.6, abs=0.1)
    # above 12 nothing of the centre is foreground, so the other side is taken: the object, dilated
    mask = foreground_masks(tokens[None], grid, threshold=12.0)[0].reshape(grid, grid)
    expected = torch.zeros(grid, grid, dtype=torch.bool)
    expected[2:8, 2:8] = True
    assert torch.equal(mask, expected)


def test_closing_fills_a_one_patch_hole_and_the_image_border_does_not_erode():
    grid = 8
    component = torch.full((grid, grid), 30.0)
    component[3, 3] = -200.0  # one hole, far below; the rest is foreground right up to the image border
    mask = foreground_masks(tokens_along(component.reshape(-1))[None], grid, threshold=1.0)[0]
    assert mask.all()


def test_categories_masked_follow_the_parameter():
    assert masks_category(True, "anything") and not masks_category(False, "capsule")
    assert masks_category(["capsule", "pill"], "pill") and not masks_category(["capsule"], "bottle")


def test_the_map_is_bilinear_upsampling_then_scipys_gaussian():
    scores = torch.tensor([[0.0, 1.0, 0.5, 2.0]])
    maps = anomaly_maps(scores, grid=2, size=32, sigma=4.0)
    upsampled = torch.nn.functional.interpolate(scores.reshape(1, 1, 2, 2), size=(32, 32), mode="bilinear", align_corners=False)[0, 0].numpy()
    np.testing.assert_allclose(maps[0].numpy(), ndimage.gaussian_filter(upsampled, sigma=4.0), atol=1e-5)  # scipy's 'reflect'


@pytest.mark.parametrize("border,mode", [("mirror", "mirror"), ("symmetric", "reflect")])
@pytest.mark.parametrize("size", [5, 40])  # 5: narrower than the radius 8, reflected more than once
def test_the_gaussian_is_scipys_with_each_border(border, mode, size):
    maps = torch.rand(2, size, size + 3, generator=torch.Generator().manual_seed(size))
    expected = np.stack([ndimage.gaussian_filter(m, sigma=2.0, mode=mode, truncate=4.0) for m in maps.double().numpy()])
    np.testing.assert_allclose(gaussian_blur(maps, 2.0, border).numpy(), expected, atol=1e-5)


def test_reflected_indices():
    assert reflected_index(4, 3, "mirror").tolist() == [3, 2, 1, 0, 1, 2, 3, 2, 1, 0]
    assert reflected_index(4, 3, "symmetric").tolist() == [2, 1, 0, 0, 1, 2, 3, 3, 2, 1]
    assert reflected_index(1, 2, "mirror").tolist() == [0] * 5
