"""A feature-store update killed with SIGKILL (no cleanup runs) leaves the store as it was, and the rerun
completes it with the same features as an uninterrupted run, leaving no orphan shard."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from PIL import Image

from fsad.backbones.loading import load_backbone
from fsad.features.extract import update_store
from fsad.features.store import FeatureStore

TINY = {"arch": "fsad-tiny", "pretrained": "none", "image_size": 112}
PARTS = {"window_sizes": [2, 3], "layers": [1], "vv_layers": [2]}

# Runs an update that says so through a marker file, then waits to be killed, at one of two points:
# ``encoding``: after the first batch is encoded (the new shard is a temporary file);
# ``committing``: after the new shard is renamed into place, before the index that lists it is written.
UPDATE_UNTIL_KILLED = """
import json, sys, time
from fsad.backbones.loading import load_backbone
from fsad.features import extract, store as store_module
from fsad.features.extract import update_store
from fsad.features.store import FeatureStore

store, marker, where, spec, paths, parts = sys.argv[1], sys.argv[2], sys.argv[3], *map(json.loads, sys.argv[4:])

def then_wait(real):
    def wrapper(*args, **kwargs):
        result = real(*args, **kwargs)
        open(marker, "w").close()
        time.sleep(600)
        return result
    return wrapper

if where == "encoding":
    extract.encode_images = then_wait(extract.encode_images)
else:
    store_module.FeatureStore._write_index = then_wait(lambda *args: None)
update_store(FeatureStore(store), load_backbone(spec, "cpu"), paths, parts["window_sizes"], batch_size=1,
             layers=parts["layers"], vv_layers=parts["vv_layers"])
"""


@pytest.fixture
def images(tmp_path):
    rng = np.random.default_rng(0)
    paths = {}
    for i in range(4):
        path = tmp_path / f"img{i}.png"
        Image.fromarray((rng.random((50, 60, 3)) * 255).astype("uint8")).save(path)
        paths[f"img{i}"] = str(path)
    return paths


def update(store: FeatureStore, paths: dict[str, str]) -> None:
    backbone = load_backbone(TINY, "cpu")
    update_store(store, backbone, paths, PARTS["window_sizes"], batch_size=1, layers=PARTS["layers"], vv_layers=PARTS["vv_layers"])


def kill_during_update(store: FeatureStore, paths: dict[str, str], marker, where: str) -> None:
    args = [str(store.path), str(marker), where, json.dumps(TINY), json.dumps(paths), json.dumps(PARTS)]
    process = subprocess.Popen([sys.executable, "-c", UPDATE_UNTIL_KILLED, *args])
    try:
        deadline = time.monotonic() + 120
        while not marker.exists():
            assert process.poll() is None, "the update ended before it could be killed"
            assert time.monotonic() < deadline, f"the update never reached {where}"
            time.sleep(0.1)
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.kill()
        process.wait()


def tensors(batch) -> dict[str, torch.Tensor]:
    named = {"image_embeddings": batch.image_embeddings, "patch_tokens": batch.patch_tokens}
    named |= {f"windows/{k}": batch.windows[k] for k in PARTS["window_sizes"]}
    return named | {"layers/1": batch.layers[1], "vv_layers/2": batch.vv_layers[2]}


def files(directory) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(directory.iterdir())}


@pytest.mark.slow  # a fresh Python with torch, killed: seconds
@pytest.mark.parametrize("where", ["encoding", "committing"])
def test_a_sigkilled_update_leaves_a_readable_store_and_the_rerun_gives_the_same_features(images, tmp_path, where):
    store = FeatureStore(tmp_path / "store" / "c.h5")
    first = {i: images[i] for i in ("img0", "img1")}
    update(store, first)
    index, shards, features = store.path.read_bytes(), files(store.shard_dir), tensors(store.load(list(first)))
    assert list(shards) == ["00001.h5"]

    kill_during_update(store, images, tmp_path / "marker", where)
    assert store.path.read_bytes() == index and store.image_ids() == ["img0", "img1"]
    after_kill = tensors(store.load(list(first)))
    assert all(torch.equal(after_kill[name], features[name]) for name in features)
    # what the killed job left: its shard, as a temporary file or renamed into place but listed by no index
    (leftover,) = set(files(store.shard_dir)) - set(shards)
    assert leftover.startswith(".00002.h5.") if where == "encoding" else leftover == "00002.h5"
    assert files(store.shard_dir)["00001.h5"] == shards["00001.h5"]

    update(store, images)
    assert [p.name for p in store.shard_paths()] == ["00001.h5", "00002.h5"]
    assert list(files(store.shard_dir)) == ["00001.h5", "00002.h5"]  # no orphan shard, no temporary
    assert sorted(p.name for p in store.path.parent.iterdir()) == ["c.h5", "c.shards"]
    assert files(store.shard_dir)["00001.h5"] == shards["00001.h5"]
    uninterrupted = FeatureStore(tmp_path / "fresh" / "c.h5")
    update(uninterrupted, images)
    ids = sorted(images)
    rerun, expected = tensors(store.load(ids)), tensors(uninterrupted.load(ids))
    for name in expected:
        assert torch.equal(rerun[name], expected[name]), name
