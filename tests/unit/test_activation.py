"""The network the weights were trained with: QuickGELU for OpenAI's tags, GELU for LAION's, whatever the weights' route."""

from __future__ import annotations

import hashlib
import json

import open_clip
import pytest
import torch
from open_clip.transformer import QuickGELU

from fsad.backbones import activation, loading
from fsad.backbones.activation import ActivationMismatchError, declared_quick_gelu
from fsad.backbones.loading import load_backbone
from fsad.backbones.spec import backbone_key, network_spec


def mlp_activations(model: torch.nn.Module) -> set[str]:
    """The class names of every MLP activation of both towers (open_clip's ResidualAttentionBlock.mlp.gelu)."""
    blocks = [*model.visual.transformer.resblocks, *model.transformer.resblocks]
    return {type(block.mlp.gelu).__name__ for block in blocks}


def offline(monkeypatch):
    monkeypatch.setattr(loading, "_hub_reachable", lambda url, timeout=3.0: False)
    monkeypatch.setattr(loading, "_cached_checkpoint", lambda arch, tag: None)


def test_an_openai_tag_builds_quick_gelu_even_with_random_fallback_weights(monkeypatch):
    offline(monkeypatch)
    backbone = load_backbone({"arch": "ViT-B-32", "pretrained": "openai", "image_size": 224}, "cpu", "random")
    assert backbone.weights.startswith("random (fallback")
    assert mlp_activations(backbone.model) == {"QuickGELU"}


def test_a_laion400m_e31_tag_of_the_winclip_backbone_builds_gelu(monkeypatch):
    offline(monkeypatch)
    backbone = load_backbone({"arch": "ViT-B-16-plus-240", "pretrained": "laion400m_e31", "image_size": 240}, "cpu", "random")
    assert mlp_activations(backbone.model) == {"GELU"}


def test_the_tag_decides_not_its_name():
    # open_clip declares QuickGELU for ViT-B-32's laion400m_e31 weights (trained with OpenAI's code), GELU for laion2b
    assert declared_quick_gelu({"arch": "ViT-B-32", "pretrained": "laion400m_e31"}) is True
    assert declared_quick_gelu({"arch": "ViT-B-32", "pretrained": "laion2b_s34b_b79k"}) is False
    assert declared_quick_gelu({"arch": "ViT-L-14-336", "pretrained": "openai"}) is True


def test_the_shipped_tag_table_is_what_the_installed_open_clip_declares():
    truth = {(arch, tag) for arch, tag in open_clip.list_pretrained() if open_clip.get_pretrained_cfg(arch, tag).get("quick_gelu")}
    assert truth and {(arch, tag) for arch, tag in open_clip.list_pretrained() if activation.tag_quick_gelu(arch, tag)} == truth


def test_a_quick_gelu_value_that_contradicts_the_tag_is_an_error():
    with pytest.raises(ActivationMismatchError, match="trained with QuickGELU; remove quick_gelu"):
        declared_quick_gelu({"arch": "ViT-L-14", "pretrained": "openai", "quick_gelu": False})
    with pytest.raises(ActivationMismatchError, match="trained with GELU"):
        declared_quick_gelu({"arch": "ViT-B-16-plus-240", "pretrained": "laion400m_e31", "quick_gelu": True})
    with pytest.raises(ActivationMismatchError, match="always builds QuickGELU"):
        declared_quick_gelu({"arch": "ViT-B-32-quickgelu", "pretrained": "none", "quick_gelu": False})


@pytest.fixture
def checkpoint(tmp_path):
    model = open_clip.create_model("fsad-tiny", pretrained=None)
    path = tmp_path / "open_clip_pytorch_model.bin"
    torch.save(model.state_dict(), path)
    return path, model.state_dict()


def test_a_checkpoint_file_must_say_its_activation_and_gets_the_one_it_says(checkpoint):
    path, weights = checkpoint
    spec = {"arch": "fsad-tiny", "pretrained": str(path), "image_size": 112}
    with pytest.raises(ActivationMismatchError, match="set quick_gelu: true in the backbone entry"):
        load_backbone(spec, "cpu")
    quick = load_backbone({**spec, "quick_gelu": True}, "cpu")
    plain = load_backbone({**spec, "quick_gelu": False}, "cpu")
    assert mlp_activations(quick.model) == {"QuickGELU"} and mlp_activations(plain.model) == {"GELU"}
    assert all(torch.equal(quick.model.state_dict()[name], value) for name, value in weights.items())
    pixels = torch.randn(1, 3, 112, 112)
    with torch.inference_mode():
        assert not torch.allclose(quick.model.encode_image(pixels), plain.model.encode_image(pixels))


def test_a_cached_checkpoint_of_a_quick_gelu_tag_loads_into_quick_gelu(checkpoint, monkeypatch):
    """The Hugging Face cache route: the file found for the tag is loaded into the tag's network."""
    path, weights = checkpoint
    monkeypatch.setattr(open_clip, "list_pretrained_tags_by_model", lambda arch: ["openai"])
    monkeypatch.setattr(open_clip, "get_pretrained_cfg", lambda arch, tag: {"quick_gelu": True})
    monkeypatch.setattr(activation, "_quick_gelu_tags", lambda: frozenset({("fsad-tiny", "openai")}))
    monkeypatch.setattr(loading, "_cached_checkpoint", lambda arch, tag: str(path))
    backbone = load_backbone({"arch": "fsad-tiny", "pretrained": "openai", "image_size": 112}, "cpu", "error")
    assert backbone.weights == "openai" and mlp_activations(backbone.model) == {"QuickGELU"}
    assert all(torch.equal(backbone.model.state_dict()[name], value) for name, value in weights.items())


def test_a_stale_tag_table_is_an_error_where_the_model_is_built(monkeypatch):
    monkeypatch.setattr(activation, "_quick_gelu_tags", lambda: frozenset())
    with pytest.raises(ActivationMismatchError, match="regenerate the table"):
        load_backbone({"arch": "ViT-B-32", "pretrained": "openai", "image_size": 224}, "cpu", "random")


def test_a_built_network_other_than_the_declared_one_is_an_error(monkeypatch):
    create = open_clip.create_model
    monkeypatch.setattr(open_clip, "create_model", lambda *a, force_quick_gelu=False, **k: create(*a, **k))  # drops the flag
    with pytest.raises(ActivationMismatchError, match="built with GELU, but its weights were trained with QuickGELU"):
        load_backbone({"arch": "fsad-tiny", "pretrained": "none", "quick_gelu": True, "image_size": 112}, "cpu")


def test_the_activation_is_part_of_the_feature_directory_hash():
    tiny = {"arch": "fsad-tiny", "pretrained": "none", "image_size": 112}
    assert network_spec(tiny)["quick_gelu"] is False and network_spec({**tiny, "quick_gelu": True})["quick_gelu"] is True
    assert backbone_key("b", tiny) != backbone_key("b", {**tiny, "quick_gelu": True})
    # the directory of a store built before the activation was part of the spec (the hash of arch, weights, size and
    # storage dtype only: GELU for OpenAI's weights) is not the one an OpenAI backbone reads now
    openai = {"arch": "ViT-L-14", "pretrained": "openai", "image_size": 240, "storage_dtype": "float16"}
    assert network_spec(openai)["quick_gelu"] is True
    old_key = "b-" + hashlib.sha256(json.dumps(openai, sort_keys=True).encode()).hexdigest()[:8]
    assert backbone_key("b", openai) != old_key and backbone_key("b", openai) == backbone_key("b", {**openai, "quick_gelu": True})


def test_the_built_activation_is_read_from_the_model():
    assert activation.built_quick_gelu(open_clip.create_model("fsad-tiny", force_quick_gelu=True)) is True
    assert activation.built_quick_gelu(open_clip.create_model("fsad-tiny")) is False
    mixed = open_clip.create_model("fsad-tiny")
    mixed.visual.transformer.resblocks[0].mlp.gelu = QuickGELU()
    with pytest.raises(ActivationMismatchError, match="expected all GELU or all QuickGELU"):
        activation.built_quick_gelu(mixed)
