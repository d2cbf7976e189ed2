"""Layer taps and the V-V attention path (AnomalyCLIP's DPAM), from the same forward as the image features."""

from __future__ import annotations

import math

import pytest
import torch

from fsad.backbones import vv_attention
from fsad.backbones.loading import load_backbone
from fsad.backbones.window_embeddings import encode_images, token_embeddings
from fsad.backbones.vv_attention import vv_start_block

TINY_L14 = {"arch": "fsad-tiny-l14", "pretrained": "none", "image_size": 98}  # 7x7 grid, 4 blocks, 2 heads


@pytest.fixture(scope="module")
def tiny():
    return load_backbone(TINY_L14, "cpu", seed=5)


@pytest.fixture(scope="module")
def pixels():
    return torch.randn(2, 3, 98, 98, generator=torch.Generator().manual_seed(1))


def hand_written_vv_tokens(backbone, pixels, start: int, block: int) -> torch.Tensor:
    """AnomalyCLIP's dual path written out head by head: ``(B, P, W)`` V-V tokens after ``block``, after ln_post.

    From block ``start`` on, each block's V-V attention reads ln_1 of the original path's input, with
    q = k = v = that block's value projection; the V-V stream starts from the original path's input to
    block ``start`` and adds every V-V attention output (no MLP).
    """
    visual = backbone.model.visual
    x = token_embeddings(backbone, pixels)
    vv_stream = None
    for n, layer in enumerate(visual.transformer.resblocks, start=1):
        if n >= start:
            normed = layer.ln_1(x)
            width, heads = layer.attn.embed_dim, layer.attn.num_heads
            head_dim = width // heads
            per_head = []
            for h in range(heads):
                rows = slice(2 * width + h * head_dim, 2 * width + (h + 1) * head_dim)
                v = normed @ layer.attn.in_proj_weight[rows].T + layer.attn.in_proj_bias[rows]
                weights = torch.softmax(v @ v.transpose(1, 2) / math.sqrt(head_dim), dim=-1)
                per_head.append(weights @ v)
            attended = torch.cat(per_head, dim=-1) @ layer.attn.out_proj.weight.T + layer.attn.out_proj.bias
            vv_stream = (x if vv_stream is None else vv_stream) + attended
        x = layer(x)
        if n == block:
            return visual.ln_post(vv_stream)[:, 1:]
    raise AssertionError(f"no block {block}")


def test_the_vv_path_starts_where_anomalyclip_replaces_attention():
    assert vv_start_block(24) == 6  # DPAM_layer=20: the last 19 of ViT-L-14's blocks
    assert vv_start_block(12) == 1


@pytest.mark.parametrize("vv_blocks, start", [(19, 1), (3, 2)])
def test_vv_tokens_equal_a_hand_written_per_head_computation(tiny, pixels, monkeypatch, vv_blocks, start):
    monkeypatch.setattr(vv_attention, "VV_BLOCKS", vv_blocks)
    with torch.inference_mode():
        features = encode_images(tiny, pixels, [], vv_layers=[2, 4])
        for block in (2, 4):
            expected = hand_written_vv_tokens(tiny, pixels, start, block)
            torch.testing.assert_close(features.vv_layers[block], expected, atol=1e-5, rtol=1e-5)


def test_layer_tokens_equal_open_clips_normalised_intermediates(tiny, pixels):
    features = encode_images(tiny, pixels, [2], layers=[1, 3, 4])
    with torch.inference_mode():
        theirs = tiny.model.visual.forward_intermediates(
            pixels, indices=[0, 2, 3], normalize_intermediates=True, intermediates_only=True, output_fmt="NLC"
        )["image_intermediates"]
    for block, expected in zip((1, 3, 4), theirs):
        assert features.layers[block].shape == (2, 49, 64)
        torch.testing.assert_close(features.layers[block], expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(features.layers[4], features.patch_tokens)


def test_taps_leave_the_image_features_and_the_model_unchanged(tiny, pixels):
    weights = {name: p.clone() for name, p in tiny.model.state_dict().items()}
    plain = encode_images(tiny, pixels, [2, 3])
    tapped = encode_images(tiny, pixels, [2, 3], layers=[2], vv_layers=[3, 4])
    for field in ("image_embeddings", "patch_tokens"):
        assert torch.equal(getattr(plain, field), getattr(tapped, field))
    assert torch.equal(plain.windows[3], tapped.windows[3])
    assert all(torch.equal(p, weights[name]) for name, p in tiny.model.state_dict().items())


def test_taps_without_the_image_pass_equal_those_with_it(tiny, pixels):
    full = encode_images(tiny, pixels, [], layers=[2], vv_layers=[3])
    taps_only = encode_images(tiny, pixels, [], with_image=False, layers=[2], vv_layers=[3])
    assert taps_only.image_embeddings.numel() == 0
    torch.testing.assert_close(taps_only.layers[2], full.layers[2])
    torch.testing.assert_close(taps_only.vv_layers[3], full.vv_layers[3])


def test_blocks_outside_the_model_or_the_vv_path_name_the_config_key(tiny, pixels, monkeypatch):
    with pytest.raises(ValueError, match="`layers:`"):
        encode_images(tiny, pixels, [], layers=[5])
    monkeypatch.setattr(vv_attention, "VV_BLOCKS", 2)
    with pytest.raises(ValueError, match=r"vv_layers \[2\].*blocks 3\.\.4.*`vv_layers:`"):
        encode_images(tiny, pixels, [], vv_layers=[2, 4])


def hand_written_mid_block_tokens(backbone, pixels, block: int) -> torch.Tensor:
    """PromptAD's memory feature written out: ``(B, P, W)`` the stream inside ``block`` after its attention, before its
    MLP, raw. Blocks before it run as open_clip's own modules; in ``block`` the attention is computed head by head from
    the packed in_proj (q, k, v) and added to the block's input, with no ln_post."""
    visual = backbone.model.visual
    x = token_embeddings(backbone, pixels)
    for n, layer in enumerate(visual.transformer.resblocks, start=1):
        if n < block:
            x = layer(x)
            continue
        normed = layer.ln_1(x)
        width, heads = layer.attn.embed_dim, layer.attn.num_heads
        head_dim = width // heads
        per_head = []
        for h in range(heads):
            q, k, v = (
                normed @ layer.attn.in_proj_weight[part * width + h * head_dim : part * width + (h + 1) * head_dim].T
                + layer.attn.in_proj_bias[part * width + h * head_dim : part * width + (h + 1) * head_dim]
                for part in range(3)
            )
            weights = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(head_dim), dim=-1)
            per_head.append(weights @ v)
        attended = torch.cat(per_head, dim=-1) @ layer.attn.out_proj.weight.T + layer.attn.out_proj.bias
        return (x + attended)[:, 1:]
    raise AssertionError(f"no block {block}")


@pytest.mark.parametrize("block", [1, 2, 4])
def test_mid_block_taps_are_the_states_after_attention_before_the_mlp(tiny, pixels, block):
    """PromptAD's memory tap (implementations.md §8): inside the block, after attention, before the MLP, no ln_post."""
    features = encode_images(tiny, pixels, [], mid_layers=[block])
    expected = hand_written_mid_block_tokens(tiny, pixels, block)
    torch.testing.assert_close(features.mid_layers[block], expected, atol=1e-5, rtol=1e-5)
    # not the block's output, nor the output of the block before it (PromptAD's hooked module)
    outputs = encode_images(tiny, pixels, [], layers=[block])
    assert (features.mid_layers[block] - outputs.layers[block]).abs().max() > 1e-2


def test_mid_block_taps_change_nothing_else(tiny, pixels):
    plain = encode_images(tiny, pixels, [2], layers=[3], vv_layers=[4])
    tapped = encode_images(tiny, pixels, [2], layers=[3], vv_layers=[4], mid_layers=[2, 3])
    for name in ("image_embeddings", "patch_tokens"):
        torch.testing.assert_close(getattr(tapped, name), getattr(plain, name), atol=0, rtol=0)
    torch.testing.assert_close(tapped.layers[3], plain.layers[3], atol=0, rtol=0)
    torch.testing.assert_close(tapped.vv_layers[4], plain.vv_layers[4], atol=0, rtol=0)
    torch.testing.assert_close(tapped.windows[2], plain.windows[2], atol=0, rtol=0)
    assert sorted(tapped.mid_layers) == [2, 3]


def test_mid_block_taps_outside_the_transformer_are_refused(tiny, pixels):
    with pytest.raises(ValueError, match="mid-block states \\[5\\]"):
        encode_images(tiny, pixels, [], mid_layers=[5])
