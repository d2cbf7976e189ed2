"""A feature-store update killed with SIGKILL (no cleanup runs) leaves the store as it was, and the rerun
completes it with the same features as an uninterrupted run."""

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
from fsad.features.cache import FeatureCache

TINY = {"arch": "fsad-tiny", "pretrained": "none", "image_size": 112}
PARTS = dict(window_sizes=[2, 3], layers=[1], vv_layers=[2])

# Encodes one batch, says so through a marker file, then waits to be killed inside the update.
UPDATE_UNTIL_KILLED = """
import json, sys, time
from fsad.backbones.loading import load_backbone
from fsad.features import cache

store, marker, spec, paths, parts = sys.argv[1], sys.argv[2], *map(json.loads, sys.argv[3:])
real = cache.encode_images

def encode_then_wait(*args, **kwargs):
    features = real(*args, **kwargs)
    open(marker, "w").close()
    time.sleep(600)
    return features

cache.encode_images = encode_then_wait
cache.FeatureCache(store).update(load_backbone(spec, "cpu"), paths, parts["window_sizes"], batch_size=1,
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


def update(store: FeatureCache, paths: dict[str, str]) -> None:
    backbone = load_backbone(TINY, "cpu")
    store.update(backbone, paths, PARTS["window_sizes"], batch_size=1, layers=PARTS["layers"], vv_layers=PARTS["vv_layers"])


def kill_during_update(store: FeatureCache, paths: dict[str, str], marker) -> None:
    args = [str(store.path), str(marker), json.dumps(TINY), json.dumps(paths), json.dumps(PARTS)]
    process = subprocess.Popen([sys.executable, "-c", UPDATE_UNTIL_KILLED, *args])
    try:
        deadline = time.monotonic() + 120
        while not marker.exists():
            assert process.poll() is None, "the update ended before it could be killed"
            assert time.monotonic() < deadline, "the update never encoded a batch"
            time.sleep(0.1)
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.kill()
        process.wait()


@pytest.mark.slow  # a fresh Python with torch, killed: seconds
def test_a_sigkilled_update_leaves_a_readable_store_and_the_rerun_gives_the_same_features(images, tmp_path):
    store = FeatureCache(tmp_path / "store" / "c.h5")
    first = {i: images[i] for i in ("img0", "img1")}
    update(store, first)
    before = store.path.read_bytes()

    kill_during_update(store, images, tmp_path / "encoded-one-batch")
    assert store.path.read_bytes() == before
    assert store.load(list(first)).layers[1].shape == (2, 49, 64)
    assert len(list(store.path.parent.glob(".c.h5.*.h5"))) == 1  # the killed job's copy

    update(store, images)
    assert list(store.path.parent.glob(".c.h5.*.h5")) == []
    uninterrupted = FeatureCache(tmp_path / "fresh" / "c.h5")
    update(uninterrupted, images)
    ids = sorted(images)
    rerun, expected = store.load(ids), uninterrupted.load(ids)
    pairs = [(rerun.image_embeddings, expected.image_embeddings), (rerun.patch_tokens, expected.patch_tokens)]
    pairs += [(rerun.windows[k], expected.windows[k]) for k in PARTS["window_sizes"]]
    pairs += [(rerun.layers[1], expected.layers[1]), (rerun.vv_layers[2], expected.vv_layers[2])]
    for a, b in pairs:
        assert torch.equal(a, b)
