"""The backbone's ``resize: promptad``: PromptAD's data path (cv2 bilinear to 1024, PIL bicubic to the input size)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from fsad.backbones.loading import load_backbone
from fsad.backbones.spec import backbone_key

TINY = {"arch": "fsad-tiny", "pretrained": "none", "image_size": 112}


@pytest.fixture(scope="module")
def image():
    rng = np.random.default_rng(3)
    return Image.fromarray(rng.integers(0, 256, size=(150, 200, 3), dtype=np.uint8))


def normalised(backbone, array: np.ndarray) -> torch.Tensor:
    cfg = backbone.model.visual.preprocess_cfg
    pixels = torch.from_numpy(np.asarray(array, dtype=np.float32) / 255.0).permute(2, 0, 1)
    return (pixels - torch.tensor(cfg["mean"]).view(3, 1, 1)) / torch.tensor(cfg["std"]).view(3, 1, 1)


def test_promptad_resize_is_cv2_bilinear_to_1024_then_pil_bicubic(image):
    backbone = load_backbone({**TINY, "resize": "promptad"}, "cpu")
    loaded = cv2.resize(np.asarray(image), (1024, 1024))  # PromptAD's datasets/dataset.py (INTER_LINEAR by default)
    expected = normalised(backbone, np.asarray(Image.fromarray(loaded).resize((112, 112), Image.BICUBIC)))
    torch.testing.assert_close(backbone.preprocess(image), expected, atol=1e-6, rtol=0)


def test_the_default_resize_is_unchanged_and_differs_from_promptads(image):
    direct, promptad = load_backbone(TINY, "cpu"), load_backbone({**TINY, "resize": "promptad"}, "cpu")
    explicit = load_backbone({**TINY, "resize": "direct"}, "cpu")
    torch.testing.assert_close(explicit.preprocess(image), direct.preprocess(image), atol=0, rtol=0)
    difference = (direct.preprocess(image) - promptad.preprocess(image)).abs()
    assert difference.max() > 1e-2
    # the same network either way: only the pixels differ
    for a, b in zip(direct.model.parameters(), promptad.model.parameters()):
        assert torch.equal(a, b)


def test_resize_names_its_own_feature_directory_only_when_set():
    assert backbone_key("b", TINY) == backbone_key("b", {**TINY, "resize": "direct"})
    assert backbone_key("b", {**TINY, "resize": "promptad"}) != backbone_key("b", TINY)


def test_an_unknown_resize_is_refused():
    with pytest.raises(ValueError, match="resize 'nearest' is not one of"):
        load_backbone({**TINY, "resize": "nearest"}, "cpu")
