"""DAGM 2007: ten classes of synthetic textured surfaces with weakly labelled defects, read in place.

Layout, as AnomalyCLIP's ``generate_dataset_json/DAGM.py`` reads it: ``Class<k>/{Train,Test}/<nnnn>.PNG``, and for
the defective images a mask ``Class<k>/{Train,Test}/Label/<nnnn>_label.PNG``. An image is anomalous (defect type
``defect``, with its mask) exactly when it has a mask; the others are normal. ``Train`` gives the train split,
``Test`` the test split (the dataset's own split), so defective training images are anomalous training images
(the split stage draws anomalous references from them first). Categories ``Class1`` ... ``Class10``.

DAGM 2007 has no download with a published checksum (:data:`fsad.data.sources.DAGM`): it is placed by hand at
``raw_root(spec, data_dir)``.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from fsad.data import sources
from fsad.data.adapters.folder import image_files
from fsad.data.download import find_dataset_root
from fsad.data.manifest import MANIFEST_COLUMNS, manifest_row
from fsad.data.registry import DatasetSpec, dataset_categories, raw_root, register

CATEGORIES = [f"Class{k}" for k in range(1, 11)]
PHASES = {"Train": "train", "Test": "test"}
DEFECT_TYPE = "defect"
MASK_SUFFIX = "_label"


def dagm_categories(spec: DatasetSpec) -> list[str]:
    """The ten DAGM 2007 classes."""
    return list(CATEGORIES)


def is_dagm_layout(folder: Path, categories: list[str]) -> bool:
    """True when every class of ``categories`` has ``Train/`` and ``Test/`` under ``folder``."""
    return all((folder / c / phase).is_dir() for c in categories for phase in PHASES)


def dagm_rows(root: Path, categories: list[str]) -> pd.DataFrame:
    """Manifest rows of ``categories``: an image with a ``Label/<stem>_label.*`` mask is anomalous, the others normal."""
    rows = []
    for category in categories:
        for phase, split in PHASES.items():
            folder = root / category / phase
            labels = folder / "Label"
            masks = {m.stem[: -len(MASK_SUFFIX)]: m for m in (image_files(labels) if labels.is_dir() else []) if m.stem.endswith(MASK_SUFFIX)}
            images = {image.stem: image for image in image_files(folder)}
            orphans = sorted(set(masks) - set(images))
            if orphans:
                raise FileNotFoundError(f"{labels}: masks without images {orphans[:5]} in {folder}; re-extract DAGM 2007")
            for stem, image in images.items():
                mask = masks.get(stem, "")
                rows.append(manifest_row(category, split, DEFECT_TYPE if mask else "good", stem, image, mask))
    return pd.DataFrame(rows, columns=MANIFEST_COLUMNS)


@register("dagm", categories=dagm_categories, has_masks=True)
def prepare_dagm(spec: DatasetSpec, data_dir: Path) -> pd.DataFrame:
    """Manifest rows of the configured classes from the hand-placed files."""
    categories = dataset_categories(spec)
    root = raw_root(spec, data_dir)
    found = find_dataset_root(root, lambda folder: is_dagm_layout(folder, categories))
    if found is None:
        layout = f"Class<k>/Train/*.PNG, Class<k>/Test/*.PNG and their Label/<nnnn>_label.PNG masks for {', '.join(categories)}"
        raise FileNotFoundError(sources.DAGM.missing(root, layout))
    return dagm_rows(found, categories)
