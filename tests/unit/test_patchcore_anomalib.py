"""Cross-check: our PatchCore reproduces anomalib's PatchcoreModel on the same random timm weights and images.

Our side: load_backbone (timm resnet18, random) -> TimmBackbone.encode (stages 2, 3) -> patch_embeddings ->
patch_scores -> reweighted_scores / anomaly_maps at the input side. anomalib's side: PatchcoreModel built around the
same weights (fsad.scorers.patchcore.anomalib_reference), its memory bank the references' patches, fed the same
preprocessed pixels. Real textile images, plus noise images that spread the random network's scores.
"""

from __future__ import annotations

import pytest
import torch

from fsad.backbones.loading import load_backbone
from fsad.scorers.patchcore.anomalib_reference import anomalib_patchcore
from fsad.scorers.patchcore.torch_model import anomaly_maps, patch_embeddings, patch_scores, reweighted_scores

from .test_winclip_anomalib import textile_images

LAYERS = [2, 3]
SIZE = 128


@pytest.fixture(scope="module")
def world():
    backbone = load_backbone({"library": "timm", "arch": "resnet18", "pretrained": "none", "image_size": SIZE}, "cpu", seed=0)
    tests, refs = textile_images(6, 2)
    pixels = torch.stack([backbone.preprocess(img) for img in tests])
    noise = torch.randn(3, *pixels.shape[1:], generator=torch.Generator().manual_seed(0)) * torch.linspace(0.5, 2, 3).view(-1, 1, 1, 1)
    return backbone, torch.cat([pixels, noise]), torch.stack([backbone.preprocess(img) for img in refs])


def ours(backbone, pixels, reference_pixels, neighbours=9):
    references, _ = patch_embeddings(backbone.encode(reference_pixels, [], layers=LAYERS), LAYERS)
    bank = references.reshape(-1, references.shape[-1])
    embedded, grid = patch_embeddings(backbone.encode(pixels, [], layers=LAYERS), LAYERS)
    scores, index = patch_scores(embedded, bank)
    return reweighted_scores(scores, index, embedded, bank, neighbours), anomaly_maps(scores, grid, SIZE), scores.amax(dim=1)


@pytest.mark.parametrize("k_shot", [1, 2])
def test_image_scores_and_maps_equal_anomalibs(world, k_shot):
    backbone, pixels, reference_pixels = world
    refs = reference_pixels[:k_shot]
    with torch.inference_mode():
        theirs = anomalib_patchcore(backbone, refs)(pixels)
        our_scores, our_maps, _ = ours(backbone, pixels, refs)
    assert theirs.anomaly_map.shape == (len(pixels), 1, SIZE, SIZE)
    assert our_scores.std() > 10 * (our_scores - theirs.pred_score).abs().max(), "the images must differ by more than the tolerance"
    torch.testing.assert_close(our_scores, theirs.pred_score, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(our_maps, theirs.anomaly_map[:, 0], rtol=1e-4, atol=1e-4)


def test_the_reweighting_is_not_the_plain_maximum_and_anomalib_agrees_with_a_bank_that_finds_itself(world):
    backbone, pixels, reference_pixels = world
    with torch.inference_mode():
        scores, _, maxima = ours(backbone, pixels, reference_pixels[:1])
        # a test image that is the reference finds every patch in the bank: distance 0 on both sides, up to the
        # cancellation of |x|^2 - 2 x.m + |m|^2 in float32 under the square root (~1e-3 here)
        itself, _, _ = ours(backbone, reference_pixels[:1], reference_pixels[:1])
        theirs = anomalib_patchcore(backbone, reference_pixels[:1])(reference_pixels[:1])
    assert not torch.allclose(scores, maxima, rtol=1e-3)
    assert (scores < maxima).all()
    assert itself.abs().max() < 0.01 * scores.min() and theirs.pred_score.abs().max() < 0.01 * scores.min()
