"""SDD: KolektorSDD surface defects of electrical commutators, cut into thirds as the papers do.

KolektorSDD holds ``kosNN/PartK.jpg`` with a pixel label ``kosNN/PartK_label.bmp``. As in InCTRL's
``convert_SDD.py`` (used by AnomalyCLIP, FAPrompt and InCTRL tables) every image is cut along its
height into three equal crops (rows ``[0, H//3)``, ``[H//3, 2H//3)``, ``[2H//3, H)``). A crop is
anomalous (defect type ``defect``) when its label crop has any non-zero pixel; anomalous crops are
test images. Normal crops are split 75/25 into train/test with sklearn's
``train_test_split(test_size=0.25, random_state=42)``. The reference lists files in
``os.listdir`` order, which is not reproducible; here folders and parts are taken in natural order
(``kos01 < kos02``, ``Part2 < Part10``), so the split is fixed but not the reference's exact one.

Crops (RGB PNG) and binarised mask crops (0/255 PNG) are written once, atomically, to
``data_dir/sdd_crops/electrical_commutators/`` in the MVTec layout (``train/good``, ``test/good``,
``test/defect``, ``ground_truth/defect/<name>_mask.png``), named ``kosNN_PartK_i``. The single
category ``electrical_commutators`` reads as AnomalyCLIP's class name "electrical commutators".

When ``raw_root(spec, data_dir)`` holds the ``kosNN`` folders (directly or one or two folders down)
nothing is downloaded; otherwise the zip from :mod:`fsad.data.sources` is downloaded, verified and
extracted to ``<root>/extracted/``.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from sklearn.model_selection import train_test_split

from fsad.data import sources
from fsad.data.adapters.folder import mvtec_layout_rows
from fsad.data.download import built_once, fetch_dataset
from fsad.data.registry import DatasetSpec, raw_root, register

CATEGORY = "electrical_commutators"
DEFECT_TYPE = "defect"
TEST_FRACTION = 0.25
SPLIT_SEED = 42
ITEM_PATTERN = re.compile(r"^kos\d+$")


def sdd_categories(spec: DatasetSpec) -> list[str]:
    """KolektorSDD is one category."""
    return [CATEGORY]


def natural_key(name: str) -> list[object]:
    """Sort key that orders embedded numbers by value (``Part2`` before ``Part10``)."""
    return [int(token) if token.isdigit() else token for token in re.split(r"(\d+)", name)]


def is_kolektor_layout(folder: Path) -> bool:
    """True when ``folder`` holds ``kosNN`` folders with ``*_label.bmp`` files."""
    return any(ITEM_PATTERN.match(child.name) and any(child.glob("*_label.bmp")) for child in folder.iterdir() if child.is_dir())


def kolektor_parts(root: Path) -> list[tuple[str, Path, Path]]:
    """``(kosNN_PartK, image, label)`` for every part, in natural order."""
    parts = []
    items = sorted((d for d in root.iterdir() if d.is_dir() and ITEM_PATTERN.match(d.name)), key=lambda d: natural_key(d.name))
    for item in items:
        for image in sorted(item.glob("*.jpg"), key=lambda p: natural_key(p.name)):
            label = item / f"{image.stem}_label.bmp"
            if not label.is_file():
                raise FileNotFoundError(f"{label}: label of {image} missing; re-extract KolektorSDD")
            parts.append((f"{item.name}_{image.stem}", image, label))
    if not parts:
        raise FileNotFoundError(f"{root}: no kosNN/PartK.jpg images; re-extract KolektorSDD or fix the dataset's `root`")
    return parts


def third_bounds(height: int) -> list[tuple[int, int]]:
    """Row ranges of the three crops of an image ``height`` rows tall."""
    return [(0, height // 3), (height // 3, 2 * height // 3), (2 * height // 3, height)]


def read_label(path: Path) -> np.ndarray:
    """Label image as a boolean (H, W) defect map."""
    with Image.open(path) as label:
        return np.asarray(label.convert("L")) != 0


def write_sdd_crops(kolektor_root: Path, crops_dir: Path) -> Path:
    """Write the thirds of every KolektorSDD part to ``crops_dir/<CATEGORY>/`` (MVTec layout), once.

    The tree is built in a staging folder beside ``crops_dir`` and renamed into place, so an
    existing ``crops_dir`` is always complete (one prepare job per dataset writes ``data_dir``).
    """
    def build(staging: Path) -> None:
        parts = kolektor_parts(kolektor_root)
        anomalous, normal = [], []
        for name, _, label_path in parts:
            label = read_label(label_path)
            for index, (top, bottom) in enumerate(third_bounds(label.shape[0])):
                (anomalous if label[top:bottom].any() else normal).append(f"{name}_{index}")
        train_names, test_names = train_test_split(normal, test_size=TEST_FRACTION, random_state=SPLIT_SEED)
        folder_of = {n: Path("train/good") for n in train_names} | {n: Path("test/good") for n in test_names}
        folder_of |= {n: Path("test") / DEFECT_TYPE for n in anomalous}
        anomalous_names = set(anomalous)
        category_dir = staging / CATEGORY
        for folder in ("train/good", "test/good", f"test/{DEFECT_TYPE}", f"ground_truth/{DEFECT_TYPE}"):
            (category_dir / folder).mkdir(parents=True)
        for name, image_path, label_path in parts:
            with Image.open(image_path) as image:
                pixels = np.asarray(image.convert("RGB"))
            label = read_label(label_path)
            if pixels.shape[:2] != label.shape:
                raise ValueError(f"{image_path}: size {pixels.shape[:2]} differs from its label {label_path} {label.shape}")
            for index, (top, bottom) in enumerate(third_bounds(label.shape[0])):
                crop_name = f"{name}_{index}"
                Image.fromarray(pixels[top:bottom]).save(category_dir / folder_of[crop_name] / f"{crop_name}.png")
                if crop_name in anomalous_names:
                    mask = (label[top:bottom] * 255).astype(np.uint8)
                    Image.fromarray(mask).save(category_dir / "ground_truth" / DEFECT_TYPE / f"{crop_name}_mask.png")

    return built_once(crops_dir, "building", build)


@register("sdd", categories=sdd_categories, has_masks=True)
def prepare_sdd(spec: DatasetSpec, data_dir: Path) -> pd.DataFrame:
    """Manifest rows of the KolektorSDD thirds, cutting them on the first call."""
    kolektor_root = fetch_dataset(
        sources.KOLEKTOR_SDD, raw_root(spec, data_dir), is_kolektor_layout, layout="kosNN/PartK.jpg with PartK_label.bmp"
    )
    crops_dir = write_sdd_crops(kolektor_root, Path(data_dir).resolve() / "sdd_crops")
    return mvtec_layout_rows(crops_dir, [CATEGORY])
