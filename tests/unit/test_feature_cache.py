"""The HDF5 feature store: incremental, checked, atomic."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from fsad.backbones.loading import load_backbone
from fsad.features import cache as cache_module
from fsad.backbones.spec import backbone_key
from fsad.features.cache import FeatureCache

TINY = {"arch": "fsad-tiny", "pretrained": "none", "image_size": 112}


@pytest.fixture(scope="module")
def tiny():
    return load_backbone(TINY, "cpu")


@pytest.fixture
def images(tmp_path):
    rng = np.random.default_rng(0)
    paths = {}
    for i in range(5):
        path = tmp_path / f"img{i}.png"
        Image.fromarray((rng.random((60, 70, 3)) * 255).astype("uint8")).save(path)
        paths[f"img{i}"] = str(path)
    return paths


def count_encodes(monkeypatch):
    calls = []
    real = cache_module.encode_images

    def spy(backbone, pixels, window_sizes, with_image=True, layers=(), vv_layers=()):
        calls.append((len(pixels), tuple(window_sizes), with_image, tuple(layers), tuple(vv_layers)))
        return real(backbone, pixels, window_sizes, with_image=with_image, layers=layers, vv_layers=vv_layers)

    monkeypatch.setattr(cache_module, "encode_images", spy)
    return calls


def test_a_rerun_encodes_nothing_and_new_images_only_themselves(tiny, images, tmp_path, monkeypatch):
    store = FeatureCache(tmp_path / "c.h5")
    first = dict(list(images.items())[:3])
    assert store.update(tiny, first, [2, 3], batch_size=8)["encoded"] == 3
    calls = count_encodes(monkeypatch)
    assert store.update(tiny, first, [2, 3])["encoded"] == 0
    assert calls == []
    assert store.update(tiny, images, [2, 3], batch_size=8)["encoded"] == 2
    assert calls == [(2, (2, 3), True, (), ())]


def test_a_new_window_size_adds_windows_without_the_full_image_pass(tiny, images, tmp_path, monkeypatch):
    store = FeatureCache(tmp_path / "c.h5")
    store.update(tiny, images, [2, 3])
    before = store.load(["img1"])
    calls = count_encodes(monkeypatch)
    summary = store.update(tiny, images, [2, 3, 7], batch_size=8)
    assert summary["extended"] == 5 and calls == [(5, (7,), False, (), ())]
    after = store.load(["img1"])
    assert store.window_sizes == [2, 3, 7]
    torch.testing.assert_close(after.windows[2], before.windows[2])
    fresh = FeatureCache(tmp_path / "fresh.h5")
    fresh.update(tiny, {"img1": images["img1"]}, [2, 3, 7])
    torch.testing.assert_close(after.windows[7], fresh.load(["img1"]).windows[7], atol=1e-5, rtol=1e-5)


def test_load_returns_the_asked_order_and_names_missing_images(tiny, images, tmp_path):
    store = FeatureCache(tmp_path / "c.h5")
    store.update(tiny, images, [2])
    batch = store.load(["img4", "img0"])
    assert batch.image_ids == ["img4", "img0"] and batch.patch_tokens.shape == (2, 49, 64)
    with pytest.raises(KeyError, match="nope"):
        store.load(["nope"])
    with pytest.raises(KeyError, match="window sizes \\[3\\]"):
        store.load(["img0"], window_sizes=[3])


def test_a_store_of_another_backbone_is_refused(tiny, images, tmp_path):
    store = FeatureCache(tmp_path / "c.h5")
    store.update(tiny, images, [2])
    other = load_backbone({**TINY, "image_size": 96}, "cpu")
    with pytest.raises(ValueError, match="delete it and rerun"):
        store.update(other, images, [2])


def test_a_killed_update_leaves_the_previous_store_intact(tiny, images, tmp_path, monkeypatch):
    path = tmp_path / "c.h5"
    store = FeatureCache(path)
    store.update(tiny, dict(list(images.items())[:2]), [2])
    before = path.read_bytes()

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(cache_module, "encode_images", crash)
    with pytest.raises(KeyboardInterrupt):
        store.update(tiny, images, [2])
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".h5") == ["c.h5"]


def test_a_corrupt_image_is_named(tiny, images, tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(ValueError, match="bad.png"):
        FeatureCache(tmp_path / "c.h5").update(tiny, {"bad": str(bad)}, [2])


def test_prefetching_workers_store_the_same_features_and_name_a_corrupt_image(tiny, images, tmp_path):
    inline, prefetched = FeatureCache(tmp_path / "a.h5"), FeatureCache(tmp_path / "b.h5")
    inline.update(tiny, images, [2, 3], batch_size=2)
    prefetched.update(tiny, images, [2, 3], batch_size=2, workers=2)
    ids = sorted(images)
    a, b = inline.load(ids), prefetched.load(ids)
    for x, y in [(a.image_embeddings, b.image_embeddings), (a.patch_tokens, b.patch_tokens), (a.windows[3], b.windows[3])]:
        torch.testing.assert_close(x, y)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(ValueError, match="bad.png"):
        FeatureCache(tmp_path / "c.h5").update(tiny, {"a": images["img0"], "bad": str(bad)}, [2], workers=1)


def test_backbone_keys_follow_the_weights_not_the_window_sizes():
    assert backbone_key("b", TINY) == backbone_key("b", {**TINY, "window_sizes": [2, 3, 7], "batch_size": 4})
    assert backbone_key("b", TINY) != backbone_key("b", {**TINY, "pretrained": "laion400m_e31"})


def test_extract_category_reports_what_it_encoded(images, tmp_path):
    from fsad.features.extract import extract_category

    args = dict(
        backbone_spec=TINY, backbone_name="tiny", image_paths=images, cache_path=tmp_path / "c.h5",
        window_sizes=[2], batch_size=4, device="cpu", weights_fallback="error", seed=0,
    )
    first = extract_category(**args)
    assert (first["backbone"], first["images"], first["encoded"], first["weights"]) == ("tiny", 5, 5, "random")
    assert first["images_per_second"] > 0
    assert extract_category(**args)["encoded"] == 0


def test_layers_are_added_to_cached_images_in_one_pass_without_the_image_features(tiny, images, tmp_path, monkeypatch):
    store = FeatureCache(tmp_path / "c.h5")
    store.update(tiny, images, [2])
    before = store.load(["img1"])
    calls = count_encodes(monkeypatch)
    summary = store.update(tiny, images, [2], layers=[1], vv_layers=[2])
    assert calls == [(5, (), False, (1,), (2,))]
    assert summary["extended"] == 5 and summary["added"] == {"window_sizes": [], "layers": [1], "vv_layers": [2]}
    assert (store.layers, store.vv_layers) == ([1], [2])
    assert store.update(tiny, images, [2], layers=[1], vv_layers=[2])["extended"] == 0 and len(calls) == 1
    after = store.load(["img1"])
    assert torch.equal(after.patch_tokens, before.patch_tokens) and torch.equal(after.windows[2], before.windows[2])
    fresh = FeatureCache(tmp_path / "fresh.h5")
    fresh.update(tiny, {"img1": images["img1"]}, [2], layers=[1], vv_layers=[2])
    expected = fresh.load(["img1"])
    torch.testing.assert_close(after.layers[1], expected.layers[1], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(after.vv_layers[2], expected.vv_layers[2], atol=1e-5, rtol=1e-5)


def test_layers_do_not_change_the_backbone_key():
    assert backbone_key("b", TINY) == backbone_key("b", {**TINY, "layers": [1, 2], "vv_layers": [2]})


def test_new_images_get_every_part_the_store_already_holds(tiny, images, tmp_path):
    store = FeatureCache(tmp_path / "c.h5")
    store.update(tiny, dict(list(images.items())[:2]), [2, 3], layers=[2])
    store.update(tiny, images, [2])
    batch = store.load(sorted(images))
    assert store.window_sizes == [2, 3] and store.layers == [2]
    assert batch.layers[2].shape == (5, 49, 64) and batch.windows[3].shape == (5, 25, 32)


def test_an_image_left_out_of_a_layer_update_gets_its_layers_when_asked_again(tiny, images, tmp_path, monkeypatch):
    store = FeatureCache(tmp_path / "c.h5")
    store.update(tiny, images, [2])
    store.update(tiny, dict(list(images.items())[:3]), [2], layers=[1])
    assert store.layers == []  # not every image holds layer 1 yet
    calls = count_encodes(monkeypatch)
    store.update(tiny, images, [2], layers=[1])
    assert calls == [(2, (), False, (1,), ())] and store.layers == [1]


def test_load_names_the_config_key_of_missing_layers(tiny, images, tmp_path):
    store = FeatureCache(tmp_path / "c.h5")
    store.update(tiny, images, [2], layers=[1])
    assert list(store.load(["img0"], layers=[]).layers) == [] and list(store.load(["img0"]).layers) == [1]
    with pytest.raises(KeyError, match="layers \\[2\\] are not cached; add them to the backbone's layers"):
        store.load(["img0"], layers=[2])
    with pytest.raises(KeyError, match="backbone's vv_layers"):
        store.load(["img0"], vv_layers=[2])


def test_features_of_cached_images_are_unchanged_when_images_are_added(tiny, images, tmp_path):
    store = FeatureCache(tmp_path / "c.h5")
    first = ["img0", "img1"]
    store.update(tiny, {i: images[i] for i in first}, [2, 3], layers=[1], vv_layers=[2])
    before = store.load(first)
    store.update(tiny, images, [2, 3], layers=[1], vv_layers=[2])
    after = store.load(first)
    assert torch.equal(before.image_embeddings, after.image_embeddings) and torch.equal(before.patch_tokens, after.patch_tokens)
    assert torch.equal(before.windows[3], after.windows[3])
    assert torch.equal(before.layers[1], after.layers[1]) and torch.equal(before.vv_layers[2], after.vv_layers[2])


def test_a_store_of_other_weights_is_refused(images, tmp_path):
    checkpoint = tmp_path / "weights" / "open_clip_pytorch_model.bin"
    spec = {**TINY, "pretrained": str(checkpoint)}
    fallback = load_backbone(spec, "cpu", weights_fallback="random")
    store = FeatureCache(tmp_path / "c.h5")
    store.update(fallback, images, [2])
    checkpoint.parent.mkdir()
    torch.save(fallback.model.state_dict(), checkpoint)
    pretrained = load_backbone(spec, "cpu")
    assert pretrained.weights == str(checkpoint)
    with pytest.raises(ValueError, match="computed with weights 'random \\(fallback.*delete"):
        store.update(pretrained, images, [2])


def test_an_update_removes_the_copies_killed_updates_left_behind(tiny, images, tmp_path):
    stale = [tmp_path / ".c.h5.k3x_9zq1.h5", tmp_path / ".c.h5.00000000.h5"]
    kept = [tmp_path / ".other.h5.k3x_9zq1.h5", tmp_path / "c.h5.backup", tmp_path / ".c.h5.old.h5"]
    for path in stale + kept:
        path.write_bytes(b"partial")
    FeatureCache(tmp_path / "c.h5").update(tiny, images, [2])
    assert not any(path.exists() for path in stale) and all(path.exists() for path in kept)
