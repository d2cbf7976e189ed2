"""The software versions every result records, and feature stores that refuse to mix versions."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import diffusers
import h5py
import numpy as np
import open_clip
import pytest
import torch
import transformers
from PIL import Image

import fsad
from fsad import provenance
from fsad.backbones.loading import load_backbone
from fsad.features.extract import update_store
from fsad.features.store import FeatureStore
from fsad.provenance import EnvironmentMismatchError, environment, environment_line

TINY = {"arch": "fsad-tiny", "pretrained": "none", "image_size": 112}


def test_the_environment_is_the_running_libraries_own_versions():
    versions = environment()
    assert versions["python"] == sys.version.split()[0]
    assert versions["torch"] == torch.__version__ and versions["open_clip"] == open_clip.__version__
    assert versions["diffusers"] == diffusers.__version__ and versions["transformers"] == transformers.__version__
    assert versions["numpy"] == np.__version__
    assert versions["fsad"].startswith(fsad.__version__)


def test_fsad_records_its_git_commit_and_whether_tracked_files_differ():
    root = Path(fsad.__file__).resolve().parent
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True)
    if head.returncode != 0:
        pytest.skip("fsad is not installed from a git checkout")
    dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, capture_output=True, text=True).stdout.strip())
    version, commit = provenance.fsad_version().split(" (git ")
    commit = commit.rstrip(")")
    assert version == fsad.__version__ and head.stdout.strip().startswith(commit.removesuffix("+dirty"))
    assert commit.endswith("+dirty") == dirty


def test_the_environment_line_names_each_library_once_in_order():
    line = environment_line({"python": "3.11.7", "torch": "2.14.1+cu130", "diffusers": None, "fsad": "0.1.0 (git abc)"})
    assert line == "python 3.11.7, torch 2.14.1+cu130, fsad 0.1.0 (git abc)"


@pytest.fixture
def images(tmp_path):
    rng = np.random.default_rng(0)
    paths = {}
    for i in range(3):
        path = tmp_path / f"img{i}.png"
        Image.fromarray((rng.random((40, 40, 3)) * 255).astype("uint8")).save(path)
        paths[f"img{i}"] = str(path)
    return paths


def test_a_store_records_the_versions_it_was_written_under(images, tmp_path):
    store = FeatureStore(tmp_path / "c.h5")
    summary = update_store(store, load_backbone(TINY, "cpu"), images, [2])
    with h5py.File(store.path) as h5:
        recorded = json.loads(h5.attrs["environment"])
    assert recorded == environment() == store.environment == summary["environment"]


def _rewrite_environment(path: Path, **changes) -> None:
    with h5py.File(path, "r+") as h5:
        if changes.get("remove"):
            del h5.attrs["environment"]
        else:
            h5.attrs["environment"] = json.dumps({**json.loads(h5.attrs["environment"]), **changes})


@pytest.mark.parametrize("change", [{"torch": "2.3.0"}, {"open_clip": "2.24.0"}, {"remove": True}])
def test_a_store_of_other_torch_or_open_clip_versions_is_refused_naming_both_and_the_fix(images, tmp_path, change):
    backbone = load_backbone(TINY, "cpu")
    store = FeatureStore(tmp_path / "c.h5")
    update_store(store, backbone, dict(list(images.items())[:2]), [2])
    _rewrite_environment(store.path, **change)
    stored = change.get("torch") or change.get("open_clip") or "unrecorded"
    for attempt in (lambda: store.load(["img0"]), lambda: update_store(store, backbone, images, [2])):
        with pytest.raises(EnvironmentMismatchError) as err:
            attempt()
        message = str(err.value)
        assert str(store.path) in message and stored in message
        assert f"torch {torch.__version__}, open_clip {open_clip.__version__}" in message
        assert "delete it" in message and "requirements/lock.txt" in message
    assert store.image_ids() == ["img0", "img1"]  # refused, not extended


def test_other_versions_of_libraries_that_do_not_compute_features_are_accepted(images, tmp_path):
    store = FeatureStore(tmp_path / "c.h5")
    update_store(store, load_backbone(TINY, "cpu"), images, [2])
    _rewrite_environment(store.path, numpy="1.26.4", fsad="0.0.1")
    assert store.load(["img0"]).image_embeddings.shape == (1, 32)

