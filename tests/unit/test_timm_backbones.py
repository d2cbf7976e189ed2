"""timm backbones (``library: timm``): what they encode, how their weights are resolved, their spec hash, their store
and the config checks that keep CLIP-only features off them."""

from __future__ import annotations

import copy
import json
import logging

import h5py
import numpy as np
import pytest
import timm
import torch
from PIL import Image
from safetensors.torch import save_file

import fsad.backbones.loading as loading
import fsad.backbones.timm_models as timm_models
from fsad.backbones.loading import WeightsUnavailableError, load_backbone
from fsad.backbones.spec import backbone_key, network_spec
from fsad.config import ConfigError
from fsad.features.extract import update_store
from fsad.features.store import FeatureStore
from fsad.provenance import EnvironmentMismatchError

from .test_config import check_config, default_config

RESNET = {"library": "timm", "arch": "resnet18", "pretrained": "none", "image_size": 64}
DINO = {"library": "timm", "arch": "vit_small_patch14_dinov2", "pretrained": "none", "image_size": 56}


@pytest.fixture(scope="module")
def resnet():
    return load_backbone(RESNET, "cpu")


@pytest.fixture(scope="module")
def dino():
    return load_backbone(DINO, "cpu")


def pixels(size: int, n: int = 2) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(size))


def test_a_cnn_holds_its_stages_row_major_and_its_last_map_as_patch_tokens(resnet):
    x = pixels(64)
    model = timm.create_model("resnet18", num_classes=0)
    model.load_state_dict(resnet.model.state_dict())
    model.eval()
    with torch.inference_mode():
        final, (layer2, layer3) = model.forward_intermediates(x, indices=[2, 3])
        features = resnet.encode(x, [], layers=[2, 3])
    assert resnet.kind == "cnn" and resnet.grid == 2 and resnet.depth == 4
    assert features.layers[2].shape == (2, 8 * 8, 128) and features.layers[3].shape == (2, 4 * 4, 256)
    # row-major: position (y, x) of a stage is row y * w + x
    torch.testing.assert_close(features.layers[2][:, 3 * 8 + 5], layer2[:, :, 3, 5])
    torch.testing.assert_close(features.layers[3].transpose(1, 2).reshape(2, 256, 4, 4), layer3)
    torch.testing.assert_close(features.patch_tokens.transpose(1, 2).reshape(2, 512, 2, 2), final)
    torch.testing.assert_close(features.image_embeddings, final.mean(dim=(2, 3)))
    taps = resnet.encode(x, [], with_image=False, layers=[3])
    assert taps.patch_tokens.numel() == 0 and torch.allclose(taps.layers[3], features.layers[3], atol=1e-6)


def test_a_vit_holds_its_normed_patch_tokens_and_class_token_and_blocks_after_the_final_norm(dino):
    x = pixels(56)
    with torch.inference_mode():
        tokens = dino.model.forward_features(x)
        block = dino.model.norm(dino.model.blocks[:3](dino.model._pos_embed(dino.model.patch_embed(x))))
        features = dino.encode(x, [], layers=[3])
    assert dino.kind == "vit" and dino.grid == 4 and dino.depth == 12
    torch.testing.assert_close(features.patch_tokens, tokens[:, 1:])
    torch.testing.assert_close(features.image_embeddings, tokens[:, 0])
    torch.testing.assert_close(features.layers[3], block[:, 1:], atol=1e-5, rtol=1e-5)


def test_clip_only_features_and_the_text_tower_are_refused_by_name(resnet, dino):
    with pytest.raises(ValueError, match="window_sizes: \\[\\]"):
        resnet.encode(pixels(64), [2])
    with pytest.raises(ValueError, match="no V-V attention path"):
        dino.encode(pixels(56), [], vv_layers=[12])
    with pytest.raises(ValueError, match="no mid-block states"):
        dino.encode(pixels(56), [], mid_layers=[6])
    with pytest.raises(ValueError, match="no mid-block states"):
        resnet.check_indices([], [], [2])
    with pytest.raises(ValueError, match="feature stages .* 1..4 of resnet18"):
        resnet.encode(pixels(64), [], layers=[5])
    with pytest.raises(ValueError, match="blocks 1..12"):
        dino.check_indices([13], [])
    with pytest.raises(ValueError, match="no text tower"):
        dino.encode_text(["a photo"])


def test_random_weights_are_the_same_in_every_job_and_say_so(resnet):
    again = load_backbone(RESNET, "cpu")
    assert resnet.weights == again.weights == "random"
    assert all(torch.equal(a, b) for a, b in zip(resnet.model.state_dict().values(), again.model.state_dict().values()))
    other = load_backbone(RESNET, "cpu", seed=1)
    assert not torch.equal(next(iter(other.model.parameters())), next(iter(resnet.model.parameters())))


def test_the_preprocessing_is_the_square_resize_with_the_weights_own_interpolation_and_statistics():
    from torchvision.transforms import v2

    def resize_and_normalize(backbone):
        steps = backbone.preprocess.transforms
        resize = next(t for t in steps if isinstance(t, v2.Resize))
        norm = next(t for t in steps if isinstance(t, v2.Normalize))
        return resize.size, resize.interpolation, tuple(norm.mean), tuple(norm.std)

    tv = load_backbone({"library": "timm", "arch": "wide_resnet50_2", "pretrained": "tv_in1k", "image_size": 32}, "cpu", "random")
    size, interpolation, mean, std = resize_and_normalize(tv)
    assert size == [32, 32] and interpolation == v2.InterpolationMode.BILINEAR  # torchvision's weights, as anomalib resizes
    assert mean == pytest.approx((0.485, 0.456, 0.406)) and std == pytest.approx((0.229, 0.224, 0.225))
    assert resize_and_normalize(load_backbone(DINO, "cpu"))[1] == v2.InterpolationMode.BICUBIC  # DINOv2's
    assert tv.preprocess(Image.new("RGB", (300, 200))).shape == (3, 32, 32)


def offline(monkeypatch):
    monkeypatch.setattr(loading, "_hub_reachable", lambda url, timeout=3.0: False)
    monkeypatch.setattr(timm_models, "_cached_checkpoint", lambda arch, tag: None)


def test_unavailable_weights_stop_with_how_to_provide_them_or_fall_back_to_labelled_random_ones(monkeypatch, caplog):
    offline(monkeypatch)
    spec = {**RESNET, "pretrained": "a1_in1k"}
    with pytest.raises(WeightsUnavailableError, match="timm downloads timm/resnet18.a1_in1k .* local checkpoint file"):
        load_backbone(spec, "cpu", "error")
    with caplog.at_level(logging.WARNING, logger="fsad.backbones.loading"):
        backbone = load_backbone(spec, "cpu", "random")
    assert backbone.weights == "random (fallback: a1_in1k unavailable)"
    assert "continuing with RANDOM weights" in caplog.text
    # features recorded with pretrained weights never meet random ones
    with pytest.raises(WeightsUnavailableError):
        load_backbone(spec, "cpu", "random", weights="a1_in1k")
    with pytest.raises(ValueError, match="neither a file nor a timm tag of resnet18; tags: .*tv_in1k"):
        load_backbone({**RESNET, "pretrained": "bogus"}, "cpu", "random")
    with pytest.raises(ValueError, match="without its tag"):
        load_backbone({**RESNET, "arch": "resnet18.a1_in1k"}, "cpu", "random")


def test_a_local_checkpoint_file_and_a_cached_one_load_those_weights(resnet, tmp_path, monkeypatch):
    source = timm.create_model("resnet18", num_classes=0)
    path = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    loaded = load_backbone({**RESNET, "pretrained": str(path)}, "cpu", "error")
    assert loaded.weights == str(path)
    assert all(torch.equal(a, b) for a, b in zip(source.state_dict().values(), loaded.model.state_dict().values()))
    monkeypatch.setattr(timm_models, "_cached_checkpoint", lambda arch, tag: str(path))
    cached = load_backbone({**RESNET, "pretrained": "a1_in1k"}, "cpu", "error")
    assert cached.weights == "a1_in1k"
    assert all(torch.equal(a, b) for a, b in zip(source.state_dict().values(), cached.model.state_dict().values()))
    with pytest.raises(WeightsUnavailableError, match="does not exist"):
        load_backbone({**RESNET, "pretrained": str(tmp_path / "missing.safetensors")}, "cpu", "error")


def test_the_spec_hash_names_the_library_for_timm_and_keeps_open_clip_directories_as_they_were():
    clip = {"arch": "ViT-B-16-plus-240", "pretrained": "laion400m_e31", "image_size": 240, "precision": "fp32", "storage_dtype": "float16"}
    assert network_spec({**clip, "library": "open_clip"}) == network_spec(clip) and "library" not in network_spec(clip)
    assert backbone_key("vitb16plus", clip) == backbone_key("vitb16plus", {**clip, "library": "open_clip"})
    assert network_spec(RESNET) == {"library": "timm", "arch": "resnet18", "pretrained": "none", "image_size": 64}
    assert backbone_key("b", RESNET) != backbone_key("b", {**RESNET, "image_size": 96})
    assert backbone_key("b", RESNET) != backbone_key("b", {**RESNET, "pretrained": "a1_in1k"})


def test_a_store_of_timm_features_grows_by_stages_and_records_timm(resnet, tmp_path):
    rng = np.random.default_rng(0)
    images = {}
    for i in range(3):
        images[f"img{i}"] = str(tmp_path / f"img{i}.png")
        Image.fromarray((rng.random((48, 48, 3)) * 255).astype("uint8")).save(images[f"img{i}"])
    store = FeatureStore(tmp_path / "c.h5")
    update_store(store, resnet, images, [], layers=[2])
    assert store.parts.layers == (2,) and store.window_sizes == []
    summary = update_store(store, resnet, images, [], layers=[2, 3])
    assert summary["encoded"] == 0 and summary["extended"] == 3 and summary["added"]["layers"] == [3]
    loaded = store.load(["img1"])
    assert loaded.grid == 2 and loaded.layers[2].shape == (1, 64, 128) and loaded.layers[3].shape == (1, 16, 256)
    with torch.inference_mode():
        direct = resnet.encode(torch.stack([resnet.preprocess(Image.open(images["img1"]))]), [], layers=[2, 3])
    torch.testing.assert_close(loaded.layers[3], direct.layers[3], atol=2e-3, rtol=2e-3)  # float16 storage
    assert store.environment["timm"] == timm.__version__
    with h5py.File(store.path, "r+") as h5:
        h5.attrs["environment"] = json.dumps({**json.loads(h5.attrs["environment"]), "timm": "0.9.0"})
    with pytest.raises(EnvironmentMismatchError, match="timm 0.9.0"):
        store.load(["img0"])


def test_a_store_written_before_timm_was_recorded_stays_readable(resnet, tmp_path):
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tmp_path / "a.png")
    store = FeatureStore(tmp_path / "c.h5")
    update_store(store, resnet, {"a": str(tmp_path / "a.png")}, [])
    with h5py.File(store.path, "r+") as h5:
        recorded = json.loads(h5.attrs["environment"])
        del recorded["timm"]
        h5.attrs["environment"] = json.dumps(recorded)
    assert store.load(["a"]).patch_tokens.shape == (1, 4, 512)


def with_timm_backbone(**entry):
    config = default_config()
    config["backbones"]["cnn"] = {"library": "timm", "arch": "resnet18", "pretrained": "none", "image_size": 64, "window_sizes": [], **entry}
    return config


@pytest.mark.parametrize("entry,key", [({"window_sizes": [2, 3]}, "window_sizes"), ({"vv_layers": [2]}, "vv_layers"), ({"quick_gelu": False}, "quick_gelu"),
                                       ({"resize": "promptad"}, "resize")])
def test_a_timm_backbone_with_clip_only_keys_is_refused_by_name(entry, key):
    with pytest.raises(ConfigError, match=f"backbones.cnn.{key}: a timm backbone has no"):
        check_config(with_timm_backbone(**entry))


def test_an_instance_reading_windows_on_a_timm_backbone_is_refused_before_any_job():
    config = with_timm_backbone()
    config["scorers"]["winclip"]["backbone"] = "cnn"
    with pytest.raises(ConfigError, match="scorers.winclip: method 'winclip' reads window embeddings"):
        check_config(config)
    config = with_timm_backbone()
    config["scorers"]["patchcore_cnn"] = copy.deepcopy({"method": "patchcore", "backbone": "cnn", "settings": ["k1"], "datasets": ["synthetic"]})
    check_config(config)
