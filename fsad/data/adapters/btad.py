"""BTAD (beanTech Anomaly Detection): products ``01``, ``02``, ``03`` in an MVTec-like layout.

Layout per product: ``train/ok``, ``test/ok``, ``test/ko`` and masks ``ground_truth/ko/<stem>.png``
(mixed ``.bmp``/``.png`` images; PIL reads both, so nothing is converted). ``ok`` maps to the defect
type ``good``; anomalies keep the defect type ``ko``. When ``raw_root(spec, data_dir)`` holds the
products (the zip wraps them in ``BTech_Dataset_transformed/``; found one or two folders down),
nothing is downloaded; otherwise the zip from :mod:`fsad.data.sources` is downloaded, verified and
extracted to ``<root>/extracted/``. Images are referenced in place.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from fsad.data import sources
from fsad.data.adapters.folder import mvtec_layout_rows
from fsad.data.download import fetch_dataset
from fsad.data.registry import DatasetSpec, dataset_categories, raw_root, register

CATEGORIES = ["01", "02", "03"]
NORMAL_FOLDERS = {"ok": "good"}


def btad_categories(spec: DatasetSpec) -> list[str]:
    """The three BTAD products."""
    return list(CATEGORIES)


def is_btad_layout(folder: Path, categories: list[str]) -> bool:
    """True when every product of ``categories`` has ``train/ok`` and ``test/`` under ``folder``."""
    return all((folder / c / "train" / "ok").is_dir() and (folder / c / "test").is_dir() for c in categories)


@register("btad", categories=btad_categories, has_masks=True)
def prepare_btad(spec: DatasetSpec, data_dir: Path) -> pd.DataFrame:
    """Manifest rows of the configured products, downloading the zip when the files are not there."""
    categories = dataset_categories(spec)
    root = fetch_dataset(
        sources.BTAD,
        raw_root(spec, data_dir),
        lambda folder: is_btad_layout(folder, categories),
        layout=f"BTAD layout <product>/train/ok, <product>/test for {categories}",
    )
    return mvtec_layout_rows(root, categories, normal_folders=NORMAL_FOLDERS)
