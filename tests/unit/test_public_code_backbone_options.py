"""The two backbone options of AnomalyCLIP's and FAPrompt's code mode, on tiny backbones: ``pos_embed_resize: bilinear``
(position embeddings resized as their code does at run time) and ``image_embedding: no_ln_post`` (the image embedding
without ``ln_post``). Each changes what it should and nothing else, and neither changes a default backbone's key."""

from __future__ import annotations

import open_clip
import pytest
import torch
import torch.nn.functional as F

from fsad.backbones.loading import load_backbone
from fsad.backbones.spec import backbone_key
from fsad.backbones.window_embeddings import encode_images
from fsad.config import ConfigError, _check_backbone
from fsad.scorers.faprompt.method import METHOD
from fsad.scorers.faprompt.params import build_learner, score_config, token_levels
from fsad.scorers.faprompt.torch_model import anomaly_maps, forward_batch, normalise
from fsad.scorers.registry import method_params
from fsad.seeding import derive_seed

NATIVE_GRID, WIDTH = 24, 64  # fsad-tiny-l14: 336 px, 14 px patches, as ViT-L-14-336; token width 64


@pytest.fixture(scope="module")
def checkpoint(tiny_l14_checkpoint):
    """A random fsad-tiny-l14 saved at its native 336 px (tests/unit/conftest.py)."""
    return tiny_l14_checkpoint


def tiny_l14(path, image_size: int, **options):
    return load_backbone({"arch": "fsad-tiny-l14", "pretrained": str(path), "quick_gelu": False, "image_size": image_size, **options}, "cpu")


def bilinear_position_embedding(native: torch.Tensor, grid: int) -> torch.Tensor:
    """The public codes' run-time resize, written out: class row kept, the 24x24 patch rows ``F.interpolate(bilinear)``."""
    patch_rows = native[1:].reshape(1, NATIVE_GRID, NATIVE_GRID, WIDTH).permute(0, 3, 1, 2)
    resized = F.interpolate(patch_rows, size=(grid, grid), mode="bilinear")
    return torch.cat([native[:1], resized.permute(0, 2, 3, 1).reshape(grid * grid, WIDTH)])


def test_bilinear_resizes_the_position_grid_as_the_public_code_and_changes_no_other_weight(checkpoint):
    path, state = checkpoint
    bilinear, bicubic = tiny_l14(path, 518, pos_embed_resize="bilinear"), tiny_l14(path, 518)
    assert bilinear.grid == bicubic.grid == 37
    position = bilinear.model.visual.positional_embedding.detach()
    torch.testing.assert_close(position, bilinear_position_embedding(state["visual.positional_embedding"], 37), rtol=0, atol=0)
    difference = (position - bicubic.model.visual.positional_embedding.detach()).abs().max().item()
    assert difference > 1e-3  # the two resizes differ (measured: up to 0.105 on these random weights)
    others = {k: v for k, v in bilinear.model.state_dict().items() if k != "visual.positional_embedding"}
    reference = bicubic.model.state_dict()
    assert others.keys() == reference.keys() - {"visual.positional_embedding"}
    for name, value in others.items():
        torch.testing.assert_close(value, reference[name], rtol=0, atol=0, msg=name)


def test_bilinear_changes_tokens_at_a_non_native_size_and_nothing_at_the_native_size(checkpoint):
    path, _ = checkpoint
    pixels = {size: torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(size)) for size in (336, 518)}
    for size, changes in ((336, False), (518, True)):
        bilinear = encode_images(tiny_l14(path, size, pos_embed_resize="bilinear"), pixels[size], [], layers=[2], vv_layers=[4])
        bicubic = encode_images(tiny_l14(path, size), pixels[size], [], layers=[2], vv_layers=[4])
        pairs = {
            "image": (bilinear.image_embeddings, bicubic.image_embeddings),
            "patches": (bilinear.patch_tokens, bicubic.patch_tokens),
            "layer 2": (bilinear.layers[2], bicubic.layers[2]),
            "V-V 4": (bilinear.vv_layers[4], bicubic.vv_layers[4]),
        }
        for what, (a, b) in pairs.items():
            if changes:
                assert (a - b).abs().max() > 1e-4, what  # measured at 518 px: patch tokens up to 0.256, V-V tokens 0.213 apart
            else:
                torch.testing.assert_close(a, b, rtol=0, atol=0, msg=what)


def test_random_weights_with_bilinear_are_the_native_random_network_resized():
    bilinear = load_backbone({"arch": "fsad-tiny", "pretrained": "none", "image_size": 224, "pos_embed_resize": "bilinear"}, "cpu", seed=3)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(3, "fsad-tiny", 224))
        native = open_clip.create_model("fsad-tiny", pretrained=None)  # 112 px, a 7x7 grid
    rows = native.visual.positional_embedding.detach()
    resized = F.interpolate(rows[1:].reshape(1, 7, 7, WIDTH).permute(0, 3, 1, 2), size=(14, 14), mode="bilinear")
    expected = torch.cat([rows[:1], resized.permute(0, 2, 3, 1).reshape(14 * 14, WIDTH)])
    assert bilinear.grid == 14
    torch.testing.assert_close(bilinear.model.visual.positional_embedding.detach(), expected, rtol=0, atol=0)
    torch.testing.assert_close(bilinear.model.visual.conv1.weight, native.visual.conv1.weight, rtol=0, atol=0)


def test_no_ln_post_changes_the_image_embedding_to_the_public_codes_and_no_token(checkpoint):
    path, _ = checkpoint
    pixels = torch.randn(2, 3, 336, 336, generator=torch.Generator().manual_seed(1))
    plain, without = tiny_l14(path, 336), tiny_l14(path, 336, image_embedding="no_ln_post")
    with_ln, no_ln = encode_images(plain, pixels, [2], layers=[2], vv_layers=[4]), encode_images(without, pixels, [2], layers=[2], vv_layers=[4])
    visual = plain.model.visual
    with torch.no_grad():
        last = visual.transformer(visual._embeds(pixels))
        torch.testing.assert_close(no_ln.image_embeddings, last[:, 0] @ visual.proj)  # AnomalyCLIP's x_ori[0] @ proj
        torch.testing.assert_close(with_ln.image_embeddings, plain.model.encode_image(pixels))  # open_clip's own
    assert (no_ln.image_embeddings - with_ln.image_embeddings).abs().max() > 1e-2
    for what in ("patch_tokens",):
        torch.testing.assert_close(getattr(no_ln, what), getattr(with_ln, what), rtol=0, atol=0)
    for part in ("windows", "layers", "vv_layers"):
        for key, value in getattr(with_ln, part).items():
            torch.testing.assert_close(getattr(no_ln, part)[key], value, rtol=0, atol=0, msg=f"{part} {key}")


def test_no_ln_post_moves_faprompts_image_scores_and_leaves_its_maps(checkpoint):
    path, _ = checkpoint
    pixels = torch.randn(3, 3, 336, 336, generator=torch.Generator().manual_seed(2))
    plain, without = tiny_l14(path, 336), tiny_l14(path, 336, image_embedding="no_ln_post")
    params = method_params(METHOD, {"train_dataset": "toy", "vv_layers": [4], "dap_patches": 5})
    learner = build_learner(params, plain, seed=0)
    outputs = []
    with torch.no_grad():
        for backbone in (plain, without):
            features = encode_images(backbone, pixels, [], vv_layers=[4])
            tokens = token_levels(features, [4], backbone.model.visual.proj)
            outputs.append(forward_batch(learner, tokens, normalise(features.image_embeddings), score_config(params)))
    ln, no_ln = outputs
    torch.testing.assert_close(anomaly_maps(no_ln, 64), anomaly_maps(ln, 64), rtol=0, atol=0)
    torch.testing.assert_close(no_ln.map_maxima, ln.map_maxima, rtol=0, atol=0)
    assert (no_ln.text_probability - ln.text_probability).abs().max() > 1e-4
    assert (no_ln.image_score - ln.image_score).abs().max() > 1e-4


def test_the_defaults_leave_a_backbones_key_unchanged_and_the_code_options_give_a_new_one():
    spec = {"arch": "ViT-L-14-336", "pretrained": "openai", "image_size": 518}
    key = backbone_key("vitl14_336", spec)
    assert backbone_key("vitl14_336", {**spec, "pos_embed_resize": "bicubic", "image_embedding": "ln_post"}) == key
    keys = {backbone_key("vitl14_336", {**spec, **option}) for option in ({"pos_embed_resize": "bilinear"}, {"image_embedding": "no_ln_post"})}
    assert len(keys) == 2 and key not in keys


def test_a_timm_backbone_refuses_the_clip_options():
    for key, value in (("pos_embed_resize", "bilinear"), ("image_embedding", "no_ln_post")):
        with pytest.raises(ConfigError, match=f"backbones.cnn.{key}: a timm backbone has no"):
            _check_backbone("cnn", {"library": "timm", "arch": "wide_resnet50_2", "window_sizes": [], key: value})
    _check_backbone("cnn", {"library": "timm", "arch": "wide_resnet50_2", "window_sizes": [], "pos_embed_resize": "bicubic"})
