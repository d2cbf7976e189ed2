"""Backbones at other image sizes than their architecture's: ViT-L-14-336 at 518 px (AnomalyCLIP, FAPrompt)
and ViT-L-14 at 240 px (One-to-Normal), on a tiny model with the same patch size and native size."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from fsad.backbones.loading import load_backbone
from fsad.backbones.window_embeddings import encode_images

NATIVE_GRID = 24  # fsad-tiny-l14: 336 px, 14 px patches, as ViT-L-14-336


@pytest.fixture(scope="module")
def checkpoint(tiny_l14_checkpoint):
    """A random fsad-tiny-l14 saved at its native 336 px (tests/unit/conftest.py)."""
    return tiny_l14_checkpoint


def expected_position_embedding(native: torch.Tensor, grid: int) -> torch.Tensor:
    """``(1 + grid * grid, W)``: the class row as is, the 24x24 patch rows resized as open_clip's resize_pos_embed does."""
    width = native.shape[1]
    patch_rows = native[1:].reshape(1, NATIVE_GRID, NATIVE_GRID, width).permute(0, 3, 1, 2)
    resized = F.interpolate(patch_rows, size=(grid, grid), mode="bicubic", antialias=True, align_corners=False)
    return torch.cat([native[:1], resized.permute(0, 2, 3, 1).reshape(grid * grid, width)])


@pytest.mark.parametrize("image_size, grid", [(518, 37), (240, 17)])
def test_a_checkpoint_loaded_at_another_size_gets_interpolated_position_embeddings(checkpoint, image_size, grid):
    path, state = checkpoint
    backbone = load_backbone({"arch": "fsad-tiny-l14", "pretrained": str(path), "quick_gelu": False, "image_size": image_size}, "cpu")
    assert backbone.grid == grid and backbone.weights == str(path)
    position = backbone.model.visual.positional_embedding.detach()
    assert position.shape == (1 + grid * grid, 64)
    torch.testing.assert_close(position, expected_position_embedding(state["visual.positional_embedding"], grid))
    torch.testing.assert_close(backbone.model.visual.conv1.weight, state["visual.conv1.weight"], rtol=0, atol=0)


def test_vit_l14_at_240_px_covers_238_px_with_a_17x17_grid(checkpoint):
    backbone = load_backbone({"arch": "fsad-tiny-l14", "pretrained": str(checkpoint[0]), "quick_gelu": False, "image_size": 240}, "cpu")
    pixels = torch.randn(1, 3, 240, 240, generator=torch.Generator().manual_seed(0))
    cropped = pixels.clone()
    cropped[..., 238:, :] = cropped[..., :, 238:] = 0  # the last 2 px fall outside the 17 patches
    full, without_margin = encode_images(backbone, pixels, [2], layers=[2]), encode_images(backbone, cropped, [2], layers=[2])
    assert full.patch_tokens.shape == (1, 17 * 17, 64) and full.windows[2].shape == (1, 16 * 16, 32)
    torch.testing.assert_close(full.layers[2], without_margin.layers[2])


def test_vit_l14_336_at_518_px_extracts_windows_layers_and_vv_layers(checkpoint):
    backbone = load_backbone({"arch": "fsad-tiny-l14", "pretrained": str(checkpoint[0]), "quick_gelu": False, "image_size": 518}, "cpu")
    assert backbone.preprocess(torch.rand(3, 600, 500)).shape == (3, 518, 518)
    features = encode_images(backbone, torch.randn(1, 3, 518, 518), [2], layers=[2, 4], vv_layers=[4])
    assert features.image_embeddings.shape == (1, 32)
    assert features.windows[2].shape == (1, 36 * 36, 32)
    assert {n: t.shape for n, t in features.layers.items()} == {2: (1, 37 * 37, 64), 4: (1, 37 * 37, 64)}
    assert features.vv_layers[4].shape == (1, 37 * 37, 64)
    assert all(torch.isfinite(t).all() for t in (features.windows[2], features.layers[2], features.vv_layers[4]))
