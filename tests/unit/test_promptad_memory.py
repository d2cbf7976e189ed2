"""PromptAD's visual memory and fusions, by values on small hand-made tensors (``PromptAD/model.py``)."""

from __future__ import annotations

import math

import pytest
import torch

from fsad.scorers.devprompt.torch_model import harmonic_fusion, memory_gallery, visual_anomaly


def test_the_gallery_is_every_shot_patch_normalised():
    tokens = torch.tensor([[[3.0, 4.0], [0.0, 2.0]], [[-1.0, 0.0], [1.0, 1.0]]])  # 2 shots, 2 patches, W 2
    expected = torch.tensor([[0.6, 0.8], [0.0, 1.0], [-1.0, 0.0], [1 / math.sqrt(2), 1 / math.sqrt(2)]])
    torch.testing.assert_close(memory_gallery(tokens), expected)


def test_visual_scores_are_the_mean_over_blocks_of_the_nearest_gallery_distance():
    # block a: gallery x and y axes; block b: gallery the x axis only
    gallery_a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    gallery_b = torch.tensor([[1.0, 0.0]])
    # one test image, two patches; block a tokens: (2, 0) -> cos 1 with x; (-1, 1) -> best cos 1/sqrt2 (with y)
    tokens_a = torch.tensor([[[2.0, 0.0], [-1.0, 1.0]]])
    # block b tokens: (0, 5) -> cos 0; (-3, 0) -> cos -1
    tokens_b = torch.tensor([[[0.0, 5.0], [-3.0, 0.0]]])
    a = torch.tensor([(1 - 1.0) / 2, (1 - 1 / math.sqrt(2)) / 2])
    b = torch.tensor([(1 - 0.0) / 2, (1 - -1.0) / 2])
    torch.testing.assert_close(visual_anomaly([tokens_a, tokens_b], [gallery_a, gallery_b]), ((a + b) / 2).unsqueeze(0))


def test_visual_scores_need_one_gallery_per_block():
    with pytest.raises(ValueError, match="one gallery per token tensor"):
        visual_anomaly([torch.ones(1, 2, 2)], [])


def test_the_harmonic_fusion_of_maps_and_image_scores():
    textual = torch.tensor([[0.5, 0.25], [0.2, 1.0]])
    visual = torch.tensor([[0.5, 0.75], [0.05, 1.0]])
    # 1 / (1/0.5 + 1/0.5) = 0.25; 1 / (4 + 4/3) = 0.1875; 1 / (5 + 20) = 0.04; 1 / 2 = 0.5
    torch.testing.assert_close(harmonic_fusion(textual, visual), torch.tensor([[0.25, 0.1875], [0.04, 0.5]]))
