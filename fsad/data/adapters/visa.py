"""VisA (Visual Anomaly, amazon-science/spot-diff): 12 objects with the official ``1cls`` split.

The archive holds ``<object>/Data/Images/{Normal,Anomaly}/*.JPG``, class-indexed masks
``<object>/Data/Masks/Anomaly/*.png`` and ``split_csv/1cls.csv`` (columns ``object, split, label,
image, mask``; paths relative to the dataset folder). Rows follow ``1cls.csv``: label ``normal`` is
the defect type ``good``, every anomaly the defect type ``bad``. Raw masks hold a class index per
defect region, so they are binarised (``mask != 0 -> 255``) and written once as PNG to
``data_dir/visa_masks/<relative mask path>``; images are referenced in place.

When ``raw_root(spec, data_dir)`` holds ``split_csv/1cls.csv`` (directly or one or two folders
down) nothing is downloaded; otherwise the tar from :mod:`fsad.data.sources` is downloaded, verified
and extracted to ``<root>/extracted/``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from fsad.data import sources
from fsad.data.download import fetch_dataset
from fsad.data.manifest import MANIFEST_COLUMNS, manifest_row
from fsad.data.registry import DatasetSpec, dataset_categories, raw_root, register
from fsad.io import atomic_path

CATEGORIES = [
    "candle", "capsules", "cashew", "chewinggum", "fryum", "macaroni1",
    "macaroni2", "pcb1", "pcb2", "pcb3", "pcb4", "pipe_fryum",
]  # fmt: skip
SPLIT_CSV = Path("split_csv") / "1cls.csv"
SPLIT_COLUMNS = ["object", "split", "label", "image", "mask"]
DEFECT_TYPES = {"normal": "good", "anomaly": "bad"}


def visa_categories(spec: DatasetSpec) -> list[str]:
    """The 12 VisA objects."""
    return list(CATEGORIES)


def read_split_csv(path: Path) -> pd.DataFrame:
    """``1cls.csv`` with its five columns as strings (``mask`` empty for normal images)."""
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [c for c in SPLIT_COLUMNS if c not in table.columns]
    bad_labels = sorted(set(table.get("label", [])) - set(DEFECT_TYPES))
    bad_splits = sorted(set(table.get("split", [])) - {"train", "test"})
    if missing or bad_labels or bad_splits:
        raise ValueError(
            f"{path}: not the VisA 1cls split (missing columns {missing}, unknown labels {bad_labels}, "
            f"unknown splits {bad_splits}); restore split_csv/1cls.csv from the VisA archive"
        )
    return table


def binarise_mask(source: Path, target: Path) -> Path:
    """Write ``source`` as a 0/255 single-channel PNG at ``target`` (atomically, once); return ``target``."""
    if target.exists():
        return target
    with Image.open(source) as mask:
        values = np.asarray(mask)
    if values.ndim == 3:
        values = values.any(axis=2)
    binary = Image.fromarray(np.where(values != 0, 255, 0).astype(np.uint8))  # 2-D uint8: mode L
    with atomic_path(target) as tmp:
        binary.save(tmp, format="PNG")
    return target


@register("visa", categories=visa_categories, has_masks=True)
def prepare_visa(spec: DatasetSpec, data_dir: Path) -> pd.DataFrame:
    """Manifest rows of the configured objects from ``1cls.csv``, binarising their masks once."""
    categories = dataset_categories(spec)
    root = fetch_dataset(
        sources.VISA, raw_root(spec, data_dir), lambda folder: (folder / SPLIT_CSV).is_file(), layout=str(SPLIT_CSV)
    )
    table = read_split_csv(root / SPLIT_CSV)
    table = table[table["object"].isin(categories)]
    mask_dir = Path(data_dir).resolve() / "visa_masks"
    rows = []
    for entry in table.itertuples(index=False):
        image = root / entry.image
        if not image.is_file():
            raise FileNotFoundError(f"{image}: listed in {root / SPLIT_CSV} but missing; re-extract the VisA archive")
        defect_type = DEFECT_TYPES[entry.label]
        mask = ""
        if defect_type != "good":
            if not entry.mask:
                raise ValueError(f"{root / SPLIT_CSV}: anomaly {entry.image} has no mask; restore the official 1cls.csv")
            raw_mask = root / entry.mask
            if not raw_mask.is_file():
                raise FileNotFoundError(f"{raw_mask}: listed in {root / SPLIT_CSV} but missing; re-extract the VisA archive")
            mask = binarise_mask(raw_mask, (mask_dir / entry.mask).with_suffix(".png"))
        rows.append(manifest_row(entry.object, entry.split, defect_type, image.stem, image, mask))
    if not rows:
        raise ValueError(f"{root / SPLIT_CSV}: no rows for the categories {categories}")
    return pd.DataFrame(rows, columns=MANIFEST_COLUMNS)
