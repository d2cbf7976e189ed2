"""Cross-check: our WinCLIP pipeline reproduces anomalib's WinClipModel on the same random open_clip weights.

Our side: load_backbone -> encode_images -> text_embeddings('anomalib' preset, verbatim class name) ->
winclip_scores -> fsad.maps.upsample. anomalib's side: WinClipModel around a copy of the same model, fed
the same preprocessed pixels (see fsad.scorers.winclip.anomalib_reference for the one layout fix).
"""

from pathlib import Path

import pytest
import torch
from PIL import Image
from scipy.stats import spearmanr

import fsad.backbones.loading  # noqa: F401  (registers the fsad-tiny preset)
from fsad.backbones.loading import load_backbone
from fsad.backbones.window_embeddings import encode_images
from fsad.scorers.winclip.anomalib_reference import anomalib_winclip
from fsad.maps import upsample
from fsad.scorers.winclip.torch_model import build_reference_memory, winclip_scores
from fsad.text.class_names import class_name
from fsad.text.prompt_ensembles import text_embeddings

WINDOW_SIZES = [2, 3]
CATEGORY = "metal_nut"  # anomalib puts the category verbatim into its prompts


def textile_images(n_test, n_refs):
    import conformal_clip_data as data

    nominal = sorted(Path(data.nominal_dir()).glob("*.jpg"))
    local = sorted(Path(data.local_dir()).glob("*.jpg"))
    tests = [p for pair in zip(local, nominal[n_refs:]) for p in pair][:n_test]
    return [Image.open(p).convert("RGB") for p in tests], [Image.open(p).convert("RGB") for p in nominal[:n_refs]]


def backbone_of(arch, image_size):
    spec = {"arch": arch, "pretrained": None, "image_size": image_size, "window_sizes": WINDOW_SIZES, "batch_size": 8, "precision": "fp32"}
    return load_backbone(spec, torch.device("cpu"), "random", 0)


def our_scores(backbone, test_pixels, reference_pixels):
    text = text_embeddings(backbone.encode_text, class_name(CATEGORY, "verbatim"), "anomalib")
    memory = None
    if len(reference_pixels):
        memory = build_reference_memory(encode_images(backbone, reference_pixels, WINDOW_SIZES), WINDOW_SIZES)
    out = winclip_scores(encode_images(backbone, test_pixels, WINDOW_SIZES), text, WINDOW_SIZES, 0.07, memory)
    return out.image_scores, upsample(out.maps, test_pixels.shape[-1])


def assert_agrees(ours, theirs):
    (our_images, our_maps), (their_images, their_maps) = ours, theirs
    assert spearmanr(our_images.numpy(), their_images.numpy()).statistic >= 0.999
    assert (our_images - their_images).abs().max() <= 1e-3
    assert our_maps.shape == their_maps.shape
    assert (our_maps - their_maps).abs().max() <= 1e-3


@pytest.fixture(scope="module")
def tiny():
    backbone = backbone_of("fsad-tiny", 112)
    tests, refs = textile_images(8, 2)
    pixels = torch.stack([backbone.preprocess(img) for img in tests])
    reference_pixels = torch.stack([backbone.preprocess(img) for img in refs])
    # Random weights give nearly equal scores on every image; a few noise images spread them so the
    # rank correlation checks an ordering, not rounding noise.
    noise = torch.randn(4, *pixels.shape[1:], generator=torch.Generator().manual_seed(0)) * torch.linspace(0.5, 3, 4).view(-1, 1, 1, 1)
    return backbone, torch.cat([pixels, noise]), reference_pixels


@pytest.mark.parametrize("k_shot", [0, 1, pytest.param(2, marks=pytest.mark.slow)])  # 2 shots: the 1-shot path, a larger memory
def test_tiny_model_scores_and_maps_match_anomalib(tiny, k_shot):
    backbone, pixels, reference_pixels = tiny
    refs = reference_pixels[:k_shot]
    with torch.inference_mode():
        reference = anomalib_winclip(backbone.model, CATEGORY, refs if k_shot else None)(pixels)
        ours = our_scores(backbone, pixels, refs)
    assert_agrees(ours, (reference.pred_score, reference.anomaly_map))


def test_anomalib_as_installed_attends_across_windows_under_open_clip_3(tiny):
    """Pins why anomalib_reference fixes the window layout; fails (and the fix can go) once anomalib does it."""
    backbone, pixels, _ = tiny
    with torch.inference_mode():
        fixed = anomalib_winclip(backbone.model, CATEGORY).encode_image(pixels[:2])[1][0]
        installed = anomalib_winclip(backbone.model, CATEGORY, fix_window_layout=False).encode_image(pixels[:2])[1][0]
        ours = encode_images(backbone, pixels[:2], [2]).windows[2]
    assert torch.allclose(ours, fixed, atol=1e-4)
    assert (installed - fixed).abs().max() > 1e-2


@pytest.mark.slow
def test_vit_b_16_plus_240_one_shot_matches_anomalib():
    backbone = backbone_of("ViT-B-16-plus-240", 240)
    tests, refs = textile_images(3, 1)
    pixels = torch.stack([backbone.preprocess(img) for img in tests])
    reference_pixels = torch.stack([backbone.preprocess(img) for img in refs])
    with torch.inference_mode():
        reference = anomalib_winclip(backbone.model, CATEGORY, reference_pixels)(pixels)
        ours = our_scores(backbone, pixels, reference_pixels)
    assert (ours[0] - reference.pred_score).abs().max() <= 1e-3
    assert (ours[1] - reference.anomaly_map).abs().max() <= 1e-3
