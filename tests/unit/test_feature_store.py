"""The HDF5 feature store: incremental, checked, atomic."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from fsad.backbones.loading import load_backbone
from fsad.backbones.spec import backbone_key
from fsad.features import extract as extract_module
from fsad.features.extract import update_store
from fsad.features.store import FeatureStore

TINY = {"arch": "fsad-tiny", "pretrained": "none", "image_size": 112}
# Float32 storage where a test compares features encoded in two ways (float16 rounding could tell them apart).
TINY32 = {**TINY, "storage_dtype": "float32"}


@pytest.fixture(scope="module")
def tiny():
    return load_backbone(TINY, "cpu")


@pytest.fixture(scope="module")
def tiny32():
    return load_backbone(TINY32, "cpu")


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
    real = extract_module.encode_images

    def spy(backbone, pixels, window_sizes, with_image=True, layers=(), vv_layers=(), mid_layers=()):
        calls.append((len(pixels), tuple(window_sizes), with_image, tuple(layers), tuple(vv_layers)))
        return real(backbone, pixels, window_sizes, with_image=with_image, layers=layers, vv_layers=vv_layers, mid_layers=mid_layers)

    monkeypatch.setattr(extract_module, "encode_images", spy)
    return calls


def test_a_rerun_encodes_nothing_and_new_images_only_themselves(tiny, images, tmp_path, monkeypatch):
    store = FeatureStore(tmp_path / "c.h5")
    first = dict(list(images.items())[:3])
    assert update_store(store, tiny, first, [2, 3], batch_size=8)["encoded"] == 3
    calls = count_encodes(monkeypatch)
    assert update_store(store, tiny, first, [2, 3])["encoded"] == 0
    assert calls == []
    assert update_store(store, tiny, images, [2, 3], batch_size=8)["encoded"] == 2
    assert calls == [(2, (2, 3), True, (), ())]


def test_a_new_window_size_adds_windows_without_the_full_image_pass(tiny32, images, tmp_path, monkeypatch):
    store = FeatureStore(tmp_path / "c.h5")
    update_store(store, tiny32, images, [2, 3])
    before = store.load(["img1"])
    calls = count_encodes(monkeypatch)
    summary = update_store(store, tiny32, images, [2, 3, 7], batch_size=8)
    assert summary["extended"] == 5 and calls == [(5, (7,), False, (), ())]
    after = store.load(["img1"])
    assert store.window_sizes == [2, 3, 7]
    torch.testing.assert_close(after.windows[2], before.windows[2])
    fresh = FeatureStore(tmp_path / "fresh.h5")
    update_store(fresh, tiny32, {"img1": images["img1"]}, [2, 3, 7])
    torch.testing.assert_close(after.windows[7], fresh.load(["img1"]).windows[7], atol=1e-5, rtol=1e-5)


def test_load_returns_the_asked_order_and_names_missing_images(tiny, images, tmp_path):
    store = FeatureStore(tmp_path / "c.h5")
    update_store(store, tiny, images, [2])
    batch = store.load(["img4", "img0"])
    assert batch.image_ids == ["img4", "img0"] and batch.patch_tokens.shape == (2, 49, 64)
    with pytest.raises(KeyError, match="nope"):
        store.load(["nope"])
    with pytest.raises(KeyError, match="window sizes \\[3\\]"):
        store.load(["img0"], window_sizes=[3])


def test_a_store_of_another_backbone_is_refused(tiny, images, tmp_path):
    store = FeatureStore(tmp_path / "c.h5")
    update_store(store, tiny, images, [2])
    other = load_backbone({**TINY, "image_size": 96}, "cpu")
    with pytest.raises(ValueError, match="delete it and rerun"):
        update_store(store, other, images, [2])


def test_a_killed_update_leaves_the_previous_store_intact(tiny, images, tmp_path, monkeypatch):
    path = tmp_path / "c.h5"
    store = FeatureStore(path)
    update_store(store, tiny, dict(list(images.items())[:2]), [2])
    before = {p.name: p.read_bytes() for p in [path, *store.shard_dir.iterdir()]}
    features = store.load(["img0", "img1"])

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(extract_module, "encode_images", crash)
    with pytest.raises(KeyboardInterrupt):
        update_store(store, tiny, images, [2])
    assert {p.name: p.read_bytes() for p in [path, *store.shard_dir.iterdir()]} == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix in (".h5", ".shards")) == ["c.h5", "c.shards"]
    assert torch.equal(store.load(["img0", "img1"]).patch_tokens, features.patch_tokens)


def test_a_corrupt_image_is_named(tiny, images, tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(ValueError, match="bad.png"):
        update_store(FeatureStore(tmp_path / "c.h5"), tiny, {"bad": str(bad)}, [2])


def test_prefetching_workers_store_the_same_features_and_name_a_corrupt_image(tiny, images, tmp_path):
    inline, prefetched = FeatureStore(tmp_path / "a.h5"), FeatureStore(tmp_path / "b.h5")
    update_store(inline, tiny, images, [2, 3], batch_size=2)
    update_store(prefetched, tiny, images, [2, 3], batch_size=2, workers=2)
    ids = sorted(images)
    a, b = inline.load(ids), prefetched.load(ids)
    for x, y in [(a.image_embeddings, b.image_embeddings), (a.patch_tokens, b.patch_tokens), (a.windows[3], b.windows[3])]:
        torch.testing.assert_close(x, y)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(ValueError, match="bad.png"):
        update_store(FeatureStore(tmp_path / "c.h5"), tiny, {"a": images["img0"], "bad": str(bad)}, [2], workers=1)


def test_backbone_keys_follow_the_weights_not_the_window_sizes():
    assert backbone_key("b", TINY) == backbone_key("b", {**TINY, "window_sizes": [2, 3, 7], "batch_size": 4})
    assert backbone_key("b", TINY) != backbone_key("b", {**TINY, "pretrained": "laion400m_e31"})


def test_an_extract_job_reports_what_it_encoded(images, tmp_path):
    from fsad.features.extract import ExtractJob, extract

    job = ExtractJob(backbone_key="tiny-0123", backbone_spec=TINY, image_paths=images, store_path=tmp_path / "c.h5", window_sizes=[2],
                     layers=[], vv_layers=[], batch_size=4, workers=None, weights_fallback="error", seed=0)
    first = extract(job, "cpu")
    assert (first["backbone"], first["images"], first["encoded"], first["weights"], first["workers"]) == ("tiny-0123", 5, 5, "random", 0)
    assert first["images_per_second"] > 0 and FeatureStore(tmp_path / "c.h5").image_ids() == sorted(images)
    assert extract(job, "cpu")["encoded"] == 0


def test_layers_are_added_to_cached_images_in_one_pass_without_the_image_features(tiny32, images, tmp_path, monkeypatch):
    store = FeatureStore(tmp_path / "c.h5")
    update_store(store, tiny32, images, [2])
    before = store.load(["img1"])
    calls = count_encodes(monkeypatch)
    summary = update_store(store, tiny32, images, [2], layers=[1], vv_layers=[2])
    assert calls == [(5, (), False, (1,), (2,))]
    assert summary["extended"] == 5 and summary["added"] == {"window_sizes": [], "layers": [1], "vv_layers": [2], "mid_layers": []}
    assert (store.layers, store.vv_layers) == ([1], [2])
    assert update_store(store, tiny32, images, [2], layers=[1], vv_layers=[2])["extended"] == 0 and len(calls) == 1
    after = store.load(["img1"])
    assert torch.equal(after.patch_tokens, before.patch_tokens) and torch.equal(after.windows[2], before.windows[2])
    fresh = FeatureStore(tmp_path / "fresh.h5")
    update_store(fresh, tiny32, {"img1": images["img1"]}, [2], layers=[1], vv_layers=[2])
    expected = fresh.load(["img1"])
    torch.testing.assert_close(after.layers[1], expected.layers[1], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(after.vv_layers[2], expected.vv_layers[2], atol=1e-5, rtol=1e-5)


def test_mid_block_states_are_added_to_cached_images_and_load_as_encoded(tiny32, images, tmp_path):
    store = FeatureStore(tmp_path / "c.h5")
    update_store(store, tiny32, images, [2])
    summary = update_store(store, tiny32, images, [2], mid_layers=[1, 2])
    assert summary["extended"] == 5 and summary["added"]["mid_layers"] == [1, 2] and store.mid_layers == [1, 2]
    got = store.load(["img1"], mid_layers=[2])
    assert sorted(got.mid_layers) == [2] and store.load(["img1"]).mid_layers.keys() == {1, 2}
    fresh = FeatureStore(tmp_path / "fresh.h5")
    update_store(fresh, tiny32, {"img1": images["img1"]}, [2], mid_layers=[2])
    torch.testing.assert_close(got.mid_layers[2], fresh.load(["img1"]).mid_layers[2], atol=1e-5, rtol=1e-5)


def test_layers_do_not_change_the_backbone_key():
    assert backbone_key("b", TINY) == backbone_key("b", {**TINY, "layers": [1, 2], "vv_layers": [2]})


def test_new_images_get_every_part_the_store_already_holds(tiny, images, tmp_path):
    store = FeatureStore(tmp_path / "c.h5")
    update_store(store, tiny, dict(list(images.items())[:2]), [2, 3], layers=[2])
    update_store(store, tiny, images, [2])
    batch = store.load(sorted(images))
    assert store.window_sizes == [2, 3] and store.layers == [2]
    assert batch.layers[2].shape == (5, 49, 64) and batch.windows[3].shape == (5, 25, 32)


def test_an_image_left_out_of_a_layer_update_gets_its_layers_when_asked_again(tiny, images, tmp_path, monkeypatch):
    store = FeatureStore(tmp_path / "c.h5")
    update_store(store, tiny, images, [2])
    update_store(store, tiny, dict(list(images.items())[:3]), [2], layers=[1])
    assert store.layers == []  # not every image holds layer 1 yet
    calls = count_encodes(monkeypatch)
    update_store(store, tiny, images, [2], layers=[1])
    assert calls == [(2, (), False, (1,), ())] and store.layers == [1]


def test_load_names_the_config_key_of_missing_layers(tiny, images, tmp_path):
    store = FeatureStore(tmp_path / "c.h5")
    update_store(store, tiny, images, [2], layers=[1])
    assert list(store.load(["img0"], layers=[]).layers) == [] and list(store.load(["img0"]).layers) == [1]
    with pytest.raises(KeyError, match="layers \\[2\\] are not cached; add them to the backbone's layers"):
        store.load(["img0"], layers=[2])
    with pytest.raises(KeyError, match="backbone's vv_layers"):
        store.load(["img0"], vv_layers=[2])


def test_features_of_cached_images_are_unchanged_when_images_are_added(tiny, images, tmp_path):
    store = FeatureStore(tmp_path / "c.h5")
    first = ["img0", "img1"]
    update_store(store, tiny, {i: images[i] for i in first}, [2, 3], layers=[1], vv_layers=[2])
    before = store.load(first)
    update_store(store, tiny, images, [2, 3], layers=[1], vv_layers=[2])
    after = store.load(first)
    assert torch.equal(before.image_embeddings, after.image_embeddings) and torch.equal(before.patch_tokens, after.patch_tokens)
    assert torch.equal(before.windows[3], after.windows[3])
    assert torch.equal(before.layers[1], after.layers[1]) and torch.equal(before.vv_layers[2], after.vv_layers[2])


def test_a_store_of_other_weights_is_refused(images, tmp_path):
    checkpoint = tmp_path / "weights" / "open_clip_pytorch_model.bin"
    spec = {**TINY, "pretrained": str(checkpoint), "quick_gelu": False}
    fallback = load_backbone(spec, "cpu", weights_fallback="random")
    store = FeatureStore(tmp_path / "c.h5")
    update_store(store, fallback, images, [2])
    checkpoint.parent.mkdir()
    torch.save(fallback.model.state_dict(), checkpoint)
    pretrained = load_backbone(spec, "cpu")
    assert pretrained.weights == str(checkpoint)
    with pytest.raises(ValueError, match="computed with weights 'random \\(fallback.*delete"):
        update_store(store, pretrained, images, [2])


def test_an_update_removes_what_killed_updates_left_behind(tiny, images, tmp_path, caplog):
    store = FeatureStore(tmp_path / "c.h5")
    update_store(store, tiny, dict(list(images.items())[:2]), [2])
    # index temporaries beside the store; in the shard directory, an unlisted shard and a shard's temporary
    stale = [tmp_path / ".c.h5.k3x_9zq1.h5", tmp_path / ".c.h5.00000000.h5", tmp_path / "c.shards/.00002.h5.abcd1234.h5"]
    unlisted = tmp_path / "c.shards/00002.h5"
    kept = [tmp_path / ".other.h5.k3x_9zq1.h5", tmp_path / "c.h5.backup", tmp_path / ".c.h5.old.h5"]
    for path in stale + kept + [unlisted]:
        path.write_bytes(b"partial")
    summary = update_store(store, tiny, images, [2])
    assert not any(path.exists() for path in stale) and all(path.exists() for path in kept)
    assert "c.shards/00002.h5, left by an update of c.h5 that was killed" in caplog.text
    # the unlisted shard was deleted, then written anew by this update
    assert sorted(p.name for p in store.shard_dir.iterdir()) == ["00001.h5", "00002.h5"] and summary["encoded"] == 3
    assert sorted(shard_contents(unlisted)) == [f"img{i}/{name}" for i in (2, 3, 4) for name in ("image_embedding", "patch_tokens", "windows/2")]
    assert store.image_ids() == sorted(images)


def shard_contents(path) -> dict[str, np.dtype]:
    """Dataset path -> dtype of every dataset of one shard file."""
    import h5py

    found = {}
    with h5py.File(path, "r") as h5:
        h5.visititems(lambda name, obj: found.update({name: obj.dtype}) if isinstance(obj, h5py.Dataset) else None)
    return found


def test_float16_stores_half_the_bytes_and_loads_float32_equal_to_the_rounded_float32_store(tiny, tiny32, images, tmp_path):
    parts = {"layers": [1], "vv_layers": [2]}
    half, full = FeatureStore(tmp_path / "half.h5"), FeatureStore(tmp_path / "full.h5")
    summary = update_store(half, tiny, images, [2, 3], **parts)
    update_store(full, tiny32, images, [2, 3], **parts)
    assert (half.storage_dtype, full.storage_dtype, summary["storage_dtype"]) == ("float16", "float32", "float16")
    (shard,) = half.shard_paths()
    stored = shard_contents(shard)
    assert len(stored) == 5 * 6 and set(stored.values()) == {np.dtype(np.float16)}
    assert set(shard_contents(full.shard_paths()[0]).values()) == {np.dtype(np.float32)}
    sizes = {store: sum(p.stat().st_size for p in store.shard_paths()) for store in (half, full)}
    assert sizes[half] / sizes[full] < 0.6 and summary["bytes"] == summary["store_bytes"] == sizes[half]

    ids = ["img3", "img0", "img4"]
    got, expected = half.load(ids), full.load(ids)
    pairs = {"image_embeddings": (got.image_embeddings, expected.image_embeddings), "patch_tokens": (got.patch_tokens, expected.patch_tokens)}
    pairs |= {f"windows {k}": (got.windows[k], expected.windows[k]) for k in (2, 3)}
    pairs |= {"layer 1": (got.layers[1], expected.layers[1]), "vv layer 2": (got.vv_layers[2], expected.vv_layers[2])}
    for name, (a, b) in pairs.items():
        assert a.dtype == torch.float32, name
        assert torch.equal(a, b.half().float()), name
        assert not torch.equal(a, b), f"{name}: float16 storage should round"


def test_an_update_writes_one_shard_of_what_it_adds_and_never_touches_the_others(tiny, images, tmp_path):
    store = FeatureStore(tmp_path / "c.h5")
    first = {i: images[i] for i in ("img0", "img1", "img2", "img3")}
    update_store(store, tiny, first, [2, 3])
    (shard1,) = store.shard_paths()
    before = snapshot(shard1)

    summary = update_store(store, tiny, images, [2, 3])
    assert summary["encoded"] == 1 and summary["extended"] == 0
    shards = store.shard_paths()
    assert [p.name for p in shards] == ["00001.h5", "00002.h5"] and snapshot(shard1) == before
    assert sorted(shard_contents(shards[1])) == ["img4/image_embedding", "img4/patch_tokens", "img4/windows/2", "img4/windows/3"]
    assert summary["bytes"] == shards[1].stat().st_size and summary["store_bytes"] == sum(p.stat().st_size for p in shards)
    assert store.path.stat().st_size < 64 * 1024
    assert store.image_ids() == sorted(images)

    summary = update_store(store, tiny, images, [2, 3, 7])
    assert summary["encoded"] == 0 and summary["extended"] == 5
    shards = store.shard_paths()
    assert len(shards) == 3 and snapshot(shard1) == before
    assert sorted(shard_contents(shards[2])) == [f"img{i}/windows/7" for i in range(5)]
    assert store.load(sorted(images)).windows[7].shape == (5, 1, 32) and store.window_sizes == [2, 3, 7]
    assert store.path.stat().st_size < 64 * 1024


def snapshot(path) -> tuple[bytes, int, int]:
    """A file's bytes, inode and modification time: all equal only if nothing rewrote or replaced it."""
    return path.read_bytes(), path.stat().st_ino, path.stat().st_mtime_ns


def test_a_missing_shard_is_named_with_the_fix(tiny, images, tmp_path):
    store = FeatureStore(tmp_path / "c.h5")
    update_store(store, tiny, dict(list(images.items())[:2]), [2])
    update_store(store, tiny, images, [2])
    store.shard_paths()[1].unlink()
    for read in (lambda: store.load(["img0"]), store.image_ids, lambda: update_store(store, tiny, images, [2])):
        with pytest.raises(FileNotFoundError, match=r"c\.shards/00002\.h5: shard of the feature store .*c\.h5 is missing; delete the index"):
            read()


def test_a_deleted_index_starts_the_store_over_without_reading_the_old_shards(tiny, images, tmp_path, caplog):
    store = FeatureStore(tmp_path / "c.h5")
    update_store(store, tiny, images, [2, 3])
    update_store(store, tiny, images, [2, 3, 7])
    store.path.unlink()
    for shard in list(store.shard_dir.iterdir()):
        shard.write_bytes(b"garbage: reading this fails")  # so the test fails if the update reads an old shard
    assert store.image_ids() == []
    summary = update_store(store, tiny, {"img1": images["img1"]}, [2])
    assert summary["encoded"] == 1 and store.image_ids() == ["img1"] and store.window_sizes == [2]
    assert [p.name for p in store.shard_dir.iterdir()] == ["00001.h5"]
    assert sorted(shard_contents(store.shard_dir / "00001.h5")) == ["img1/image_embedding", "img1/patch_tokens", "img1/windows/2"]
    assert "the store starts over" in caplog.text


def test_a_store_of_the_other_storage_dtype_is_refused_with_the_fix(tiny, images, tmp_path):
    store = FeatureStore(tmp_path / "c.h5")
    update_store(store, tiny, images, [2])
    with pytest.raises(ValueError, match=r"c\.h5: stores float16 values but the backbone's storage_dtype is float32; .*delete .*c\.h5 and .*c\.shards"):
        update_store(store, load_backbone(TINY32, "cpu"), images, [2])


def test_a_single_file_store_of_the_old_layout_is_refused_with_the_fix(tiny, images, tmp_path):
    import h5py

    path = tmp_path / "c.h5"
    with h5py.File(path, "w") as h5:
        h5.attrs.update(backbone_spec="{}", weights="random", grid=7)
        h5.create_group("img0")
    for read in (lambda: FeatureStore(path).load(["img0"]), lambda: update_store(FeatureStore(path), tiny, images, [2])):
        with pytest.raises(ValueError, match=r"c\.h5: not a feature store index .*delete it and rerun extract_features"):
            read()


def test_values_beyond_float16_are_refused_with_the_fix(tiny, images, tmp_path, monkeypatch):
    real = extract_module.encode_images

    def huge(*args, **kwargs):
        features = real(*args, **kwargs)
        features.patch_tokens = features.patch_tokens * 1e6
        return features

    monkeypatch.setattr(extract_module, "encode_images", huge)
    store = FeatureStore(tmp_path / "c.h5")
    with pytest.raises(ValueError, match="patch_tokens .* exceeds the range of float16 .*set storage_dtype: float32"):
        update_store(store, tiny, images, [2])
    assert store.image_ids() == [] and not store.path.exists()
    assert update_store(store, load_backbone(TINY32, "cpu"), images, [2])["encoded"] == 5


def test_storage_dtype_changes_the_backbone_key_and_the_schema_defaults_it_to_float16():
    from pathlib import Path

    import yaml
    from snakemake.utils import validate

    assert backbone_key("b", {**TINY, "storage_dtype": "float16"}) != backbone_key("b", TINY32)
    root = Path(__file__).resolve().parents[2]
    config = yaml.safe_load((root / "config/config.yaml").read_text())
    validate(config, schema=str(root / "config/schema.yaml"))
    assert {spec["storage_dtype"] for spec in config["backbones"].values()} == {"float16"}


def test_reading_a_store_imports_no_backbone_code():
    import subprocess
    import sys

    probe = "import sys, fsad.features.store; print(sorted(m for m in ('open_clip', 'PIL', 'fsad.backbones.loading') if m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.strip() == "[]"
