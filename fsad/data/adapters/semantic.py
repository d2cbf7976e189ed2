"""MNIST and CIFAR-10, one class against the rest (InCTRL's and One-to-Normal's semantic anomaly detection).

Both are read and downloaded by torchvision's dataset classes (``torchvision.datasets.MNIST`` and ``CIFAR10``:
their mirrors and md5 checks), into ``raw_root(spec, data_dir)`` (``spec['root']``, else ``data_dir/raw``), where
torchvision keeps ``MNIST/raw/*-ubyte`` and ``cifar-10-batches-py/``. Each class is a category: its training
images are the normal training images; the whole test set is every category's test set, the class's own images
normal (``good``) and the other nine classes' anomalous, with defect type the class they belong to. No masks.

The images are written once as PNGs (``data_dir/images/{train,test}/NNNNN.png``, numbered in torchvision's order,
greyscale for MNIST and RGB for CIFAR-10), in a staging folder renamed into place, so an existing folder is
complete. Documented sizes: MNIST 60,000 train / 10,000 test 28x28 digits; CIFAR-10 50,000 train / 10,000 test
32x32 images, 5,000 / 1,000 per class.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from fsad.data.download import built_once
from fsad.data.manifest import MANIFEST_COLUMNS, manifest_row
from fsad.data.registry import DatasetSpec, raw_root, register


@dataclass(frozen=True)
class SemanticSource:
    """A torchvision dataset class (by name, looked up at call time) and the category name of each class index."""

    torchvision_class: str
    categories: tuple[str, ...]


MNIST = SemanticSource("MNIST", tuple(f"digit_{d}" for d in range(10)))
# CIFAR-10's label names, in label order (batches.meta; https://www.cs.toronto.edu/~kriz/cifar.html).
CIFAR10 = SemanticSource(
    "CIFAR10", ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
)


def load_split(source: SemanticSource, root: Path, train: bool) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, H, W[, 3]) uint8 and class indices of one split, downloaded by torchvision when absent."""
    import torchvision.datasets

    dataset_class = getattr(torchvision.datasets, source.torchvision_class)
    root.mkdir(parents=True, exist_ok=True)
    dataset = dataset_class(str(root), train=train, download=True)
    images, targets = np.asarray(dataset.data), np.asarray(dataset.targets, dtype=np.int64)
    names = getattr(dataset, "classes", None)
    if source is CIFAR10 and list(names) != list(source.categories):
        raise ValueError(f"{root}: CIFAR-10 label names {names} differ from {list(source.categories)}; re-download it")
    if len(images) != len(targets) or not set(targets.tolist()) <= set(range(len(source.categories))):
        raise ValueError(f"{root}: {source.torchvision_class} {'train' if train else 'test'} labels out of range; re-download it")
    return images, targets


def write_images(source: SemanticSource, root: Path, images_dir: Path) -> dict[str, np.ndarray]:
    """Write both splits as PNGs under ``images_dir`` once; return the class index of every image, per split."""
    def build(staging: Path) -> None:
        targets = {}
        for split in ("train", "test"):
            images, targets[split] = load_split(source, root, split == "train")
            (staging / split).mkdir(parents=True)
            for index, pixels in enumerate(images):
                Image.fromarray(pixels).save(staging / split / f"{index:05d}.png")
        np.savez(staging / "targets.npz", **targets)

    with np.load(built_once(images_dir, "writing", build) / "targets.npz") as saved:
        return {split: saved[split] for split in ("train", "test")}


def one_class_rows(source: SemanticSource, images_dir: Path, targets: dict[str, np.ndarray], categories: list[str]) -> pd.DataFrame:
    """Per category: its training images (normal, train) and the whole test set (its class normal, the rest anomalous)."""
    rows = []
    for category in categories:
        own = source.categories.index(category)
        for index in np.flatnonzero(targets["train"] == own):
            rows.append(manifest_row(category, "train", "good", f"{index:05d}", images_dir / "train" / f"{index:05d}.png"))
        for index, target in enumerate(targets["test"]):
            defect_type = "good" if target == own else source.categories[target]
            rows.append(manifest_row(category, "test", defect_type, f"{index:05d}", images_dir / "test" / f"{index:05d}.png"))
    return pd.DataFrame(rows, columns=MANIFEST_COLUMNS)


def _register(kind: str, source: SemanticSource) -> None:
    def categories(spec: DatasetSpec) -> list[str]:
        return list(source.categories)

    @register(kind, categories=categories, has_masks=False)
    def prepare(spec: DatasetSpec, data_dir: Path) -> pd.DataFrame:
        images_dir = Path(data_dir).resolve() / "images"
        targets = write_images(source, raw_root(spec, data_dir), images_dir)
        return one_class_rows(source, images_dir, targets, list(spec.get("categories") or source.categories))

    prepare.__doc__ = f"Manifest rows of {source.torchvision_class}, one class against the rest per category."


_register("mnist", MNIST)
_register("cifar10", CIFAR10)
