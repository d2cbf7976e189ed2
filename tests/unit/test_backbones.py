"""Backbone loading and WinCLIP window embeddings on the tiny open_clip preset."""

from __future__ import annotations

import logging

import pytest
import torch

from fsad.backbones import loading
from fsad.backbones.loading import WeightsUnavailableError, load_backbone
from fsad.backbones.window_embeddings import encode_images, pooled_embeddings, token_embeddings
from fsad.backbones.windows import window_patch_indices

TINY = {"arch": "fsad-tiny", "pretrained": "none", "image_size": 112}


@pytest.fixture(scope="module")
def tiny():
    return load_backbone(TINY, "cpu")


def naive_window_embeddings(backbone, pixels, k):
    """One window at a time, through the unmodified open_clip transformer."""
    visual = backbone.model.visual
    tokens = token_embeddings(backbone, pixels)
    rows = []
    for image in tokens:
        per_window = []
        for patches in window_patch_indices(backbone.grid, k):
            seq = torch.cat([image[:1], image[patches + 1]]).unsqueeze(0)
            x = visual.ln_post(visual.transformer(seq))
            per_window.append(x[0, 0] @ visual.proj)
        rows.append(torch.stack(per_window))
    return torch.stack(rows)


def test_batched_windows_equal_one_window_at_a_time(tiny):
    pixels = torch.randn(2, 3, 112, 112)
    features = encode_images(tiny, pixels, [2, 3, 7])
    for k in (2, 3, 7):
        assert features.windows[k].shape == (2, (7 - k + 1) ** 2, 32)
        torch.testing.assert_close(features.windows[k], naive_window_embeddings(tiny, pixels, k), atol=1e-5, rtol=1e-5)


def test_class_token_only_last_block_matches_the_full_block(tiny):
    tokens = token_embeddings(tiny, torch.randn(3, 3, 112, 112))
    visual = tiny.model.visual
    full = visual.ln_post(visual.transformer(tokens))[:, 0] @ visual.proj
    torch.testing.assert_close(pooled_embeddings(tiny, tokens), full, atol=1e-5, rtol=1e-5)


def test_image_features_are_open_clips_own_outputs(tiny):
    pixels = torch.randn(2, 3, 112, 112)
    features = encode_images(tiny, pixels, [2])
    tiny.model.visual.output_tokens = True
    try:
        pooled, tokens = tiny.model.visual(pixels)
    finally:
        tiny.model.visual.output_tokens = False
    torch.testing.assert_close(features.image_embeddings, pooled)
    torch.testing.assert_close(features.patch_tokens, tokens)


def test_window_embeddings_equal_anomalibs_encode_image(tiny):
    pytest.importorskip("anomalib")
    from fsad.scorers.winclip.anomalib_reference import anomalib_winclip

    pixels = torch.randn(2, 3, 112, 112)
    ours = encode_images(tiny, pixels, [2, 3])
    with torch.inference_mode():
        image, windows, patches = anomalib_winclip(tiny.model, "object").encode_image(pixels)
    torch.testing.assert_close(ours.image_embeddings, image, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ours.patch_tokens, patches, atol=1e-5, rtol=1e-5)
    for k, theirs in zip((2, 3), windows):
        torch.testing.assert_close(ours.windows[k], theirs, atol=1e-5, rtol=1e-5)


def test_random_weights_are_identical_in_every_job():
    a, b = load_backbone(TINY, "cpu", seed=3), load_backbone(TINY, "cpu", seed=3)
    for pa, pb in zip(a.model.parameters(), b.model.parameters()):
        assert torch.equal(pa, pb)
    assert a.weights == "random"


def unreachable_hub(monkeypatch):
    monkeypatch.setattr(loading, "_hub_reachable", lambda url, timeout=3.0: False)
    monkeypatch.setattr(loading, "_cached_checkpoint", lambda arch, tag: None)


def test_unavailable_weights_with_fallback_error_say_how_to_provide_them(monkeypatch):
    unreachable_hub(monkeypatch)
    with pytest.raises(WeightsUnavailableError, match="`pretrained:` to a local checkpoint file"):
        load_backbone({"arch": "ViT-B-16-plus-240", "pretrained": "laion400m_e31"}, "cpu", "error")


def test_unavailable_weights_with_fallback_random_warn_and_label_the_weights(monkeypatch, caplog, capfd):
    unreachable_hub(monkeypatch)
    spec = {"arch": "fsad-tiny", "pretrained": "/nonexistent/open_clip_pytorch_model.bin", "quick_gelu": False, "image_size": 112}
    with caplog.at_level(logging.WARNING, logger="fsad.backbones.loading"):
        backbone = load_backbone(spec, "cpu", "random")
    assert backbone.weights.startswith("random (fallback")
    (record,) = [r for r in caplog.records if r.name == "fsad.backbones.loading"]
    assert record.levelno == logging.WARNING
    message = record.getMessage()
    assert "continuing with RANDOM weights" in message and "NOT comparable to papers" in message
    assert "fsad-tiny" in message and "/nonexistent/open_clip_pytorch_model.bin" in message
    # the terminal running snakemake sees it too: the job's own stderr (fd 2), not only its log file
    assert "continuing with RANDOM weights" in capfd.readouterr().err
    again = load_backbone(spec, "cpu", "random")
    assert all(torch.equal(p, q) for p, q in zip(backbone.model.parameters(), again.model.parameters()))


def test_features_recorded_with_pretrained_weights_never_get_a_random_text_tower(monkeypatch):
    spec = {"arch": "fsad-tiny", "pretrained": "/nonexistent/ckpt.bin", "quick_gelu": False, "image_size": 112}
    with pytest.raises(WeightsUnavailableError):
        load_backbone(spec, "cpu", "random", weights="/nonexistent/ckpt.bin")


def test_text_embeddings_have_the_joint_width(tiny):
    assert tiny.encode_text(["a photo of a flawless object.", "a photo of a damaged object."]).shape == (2, 32)


def test_preprocessing_resizes_to_the_backbone_size(tiny):
    from PIL import Image

    image = Image.new("L", (300, 200), 128)
    assert tiny.preprocess(image).shape == (3, 112, 112)
