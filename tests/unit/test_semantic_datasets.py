"""MNIST and CIFAR-10, one class against the rest: torchvision's download code against local fixture files."""

from __future__ import annotations

import gzip
import hashlib
import pickle
import struct
import tarfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torchvision.datasets
from PIL import Image

from fsad.data.manifest import validate_manifest
from fsad.data.registry import dataset_categories, get_adapter, prepare_dataset

CIFAR_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def idx_file(path: Path, array: np.ndarray) -> Path:
    """An MNIST idx file (gzipped): magic 0x0801 (labels) or 0x0803 (images), big-endian sizes, then the bytes."""
    header = struct.pack(">I", 0x0800 + array.ndim) + b"".join(struct.pack(">I", n) for n in array.shape)
    path.write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes()))
    return path


@pytest.fixture
def mnist(server, monkeypatch):
    """12 train and 7 test 6x6 digits served as torchvision's four .gz resources, with their md5s."""
    rng = np.random.default_rng(1)
    labels = {"train": np.array([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 3, 3]), "t10k": np.array([3, 3, 0, 9, 5, 3, 1])}
    images = {split: rng.integers(0, 256, (len(y), 6, 6), dtype=np.uint8) for split, y in labels.items()}
    resources = []
    for split in ("train", "t10k"):
        for name, array in ((f"{split}-images-idx3-ubyte.gz", images[split]), (f"{split}-labels-idx1-ubyte.gz", labels[split])):
            resources.append((name, md5(idx_file(server.directory / name, array))))
    monkeypatch.setattr(torchvision.datasets.MNIST, "mirrors", [server.url("")])
    monkeypatch.setattr(torchvision.datasets.MNIST, "resources", resources)
    return images, labels


def test_mnist_downloads_through_torchvision_and_is_one_digit_against_the_rest(tmp_path, server, mnist):
    images, _ = mnist
    assert dataset_categories({"name": "mnist", "kind": "mnist"}) == [f"digit_{d}" for d in range(10)]
    assert not get_adapter("mnist").has_masks
    manifest = prepare_dataset({"name": "mnist", "kind": "mnist"}, tmp_path / "data")
    validate_manifest(manifest)
    assert sorted({path for path, _ in server.requests}) == sorted(f"/{n}" for n, _ in torchvision.datasets.MNIST.resources)
    three = manifest[manifest["category"] == "digit_3"]
    # digit 3: train indices 3, 10, 11; the whole test set of 7, test indices 0, 1, 5 normal.
    assert sorted(three.loc[three["split"] == "train", "image_path"].map(lambda p: Path(p).name)) == ["00003.png", "00010.png", "00011.png"]
    assert set(three.loc[three["split"] == "train", "label"]) == {0}
    test = three[three["split"] == "test"].set_index(three.loc[three["split"] == "test", "image_path"].map(lambda p: Path(p).name))
    assert len(test) == 7
    assert test["label"].sort_index().tolist() == [0, 0, 1, 1, 1, 0, 1]
    assert test["defect_type"].sort_index().tolist() == ["good", "good", "digit_0", "digit_9", "digit_5", "good", "digit_1"]
    assert len(manifest) == 12 + 10 * 7 and (manifest["mask_path"] == "").all()
    # the PNGs are the served pixels, in torchvision's order
    row = test.loc["00004.png"]
    np.testing.assert_array_equal(np.asarray(Image.open(row["image_path"])), images["t10k"][4])
    # a second prepare reads the written images without downloading
    served = len(server.requests)
    pd.testing.assert_frame_equal(prepare_dataset({"name": "mnist", "kind": "mnist"}, tmp_path / "data"), manifest)
    assert len(server.requests) == served


def test_mnist_with_a_wrong_checksum_fails_and_writes_no_images(tmp_path, mnist, monkeypatch):
    bad = [(name, "0" * 32) for name, _ in torchvision.datasets.MNIST.resources]
    monkeypatch.setattr(torchvision.datasets.MNIST, "resources", bad)
    with pytest.raises(RuntimeError):
        prepare_dataset({"name": "mnist", "kind": "mnist"}, tmp_path / "data")
    assert not (tmp_path / "data" / "images").exists()


@pytest.fixture
def cifar(tmp_path, server, monkeypatch):
    """A cifar-10-python.tar.gz with five train batches of 2 images and a test batch of 5, its md5s patched in."""
    rng = np.random.default_rng(2)
    folder = tmp_path / "cifar_src" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    train_labels = [[0, 1], [2, 3], [4, 5], [6, 7], [8, 8]]
    test_labels = [8, 0, 8, 2, 9]
    pixels = {}
    for name, labels in [(f"data_batch_{i + 1}", y) for i, y in enumerate(train_labels)] + [("test_batch", test_labels)]:
        pixels[name] = rng.integers(0, 256, (len(labels), 3 * 32 * 32), dtype=np.uint8)
        (folder / name).write_bytes(pickle.dumps({"data": pixels[name], "labels": labels}))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": CIFAR_NAMES}))
    archive = server.directory / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname=folder.name)
    cls = torchvision.datasets.CIFAR10
    monkeypatch.setattr(cls, "url", server.url(archive.name))
    monkeypatch.setattr(cls, "tgz_md5", md5(archive))
    monkeypatch.setattr(cls, "train_list", [[f"data_batch_{i}", md5(folder / f"data_batch_{i}")] for i in range(1, 6)])
    monkeypatch.setattr(cls, "test_list", [["test_batch", md5(folder / "test_batch")]])
    monkeypatch.setattr(cls, "meta", cls.meta | {"md5": md5(folder / "batches.meta")})
    return pixels


def test_cifar10_downloads_through_torchvision_and_is_one_class_against_the_rest(tmp_path, server, cifar):
    spec = {"name": "cifar10", "kind": "cifar10"}
    assert dataset_categories(spec) == CIFAR_NAMES
    manifest = prepare_dataset(spec | {"categories": ["ship", "airplane"]}, tmp_path / "data")
    validate_manifest(manifest)
    assert {path for path, _ in server.requests} == {"/cifar-10-python.tar.gz"}  # torchvision GETs it to follow redirects, then again
    assert set(manifest["category"]) == {"ship", "airplane"}
    ship = manifest[manifest["category"] == "ship"]
    # ship (8): train images 8 and 9 (batch 5), test images 0 and 2 normal, the other three anomalous
    assert sorted(ship.loc[ship["split"] == "train", "image_path"].map(lambda p: Path(p).name)) == ["00008.png", "00009.png"]
    test = ship[ship["split"] == "test"].set_index(ship.loc[ship["split"] == "test", "image_path"].map(lambda p: Path(p).name)).sort_index()
    assert test["defect_type"].tolist() == ["good", "airplane", "good", "bird", "truck"]
    assert test["label"].tolist() == [0, 1, 0, 1, 1]
    airplane = manifest[manifest["category"] == "airplane"]
    assert (airplane["split"] == "train").sum() == 1 and (airplane["label"] == 0).sum() == 2
    # RGB pixels in CIFAR's channel-first row layout
    expected = cifar["test_batch"][3].reshape(3, 32, 32).transpose(1, 2, 0)
    np.testing.assert_array_equal(np.asarray(Image.open(test.loc["00003.png", "image_path"])), expected)
