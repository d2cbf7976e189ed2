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
from fsad.data.adapters.folder import fetch_mvtec_layout
from fsad.data.registry import DatasetSpec, register

CATEGORIES = ["01", "02", "03"]
NORMAL_FOLDER = "ok"


def btad_categories(spec: DatasetSpec) -> list[str]:
    """The three BTAD products."""
    return list(CATEGORIES)


@register("btad", categories=btad_categories, has_masks=True)
def prepare_btad(spec: DatasetSpec, data_dir: Path) -> pd.DataFrame:
    """Manifest rows of the configured products, downloading the zip when the files are not there."""
    return fetch_mvtec_layout(spec, data_dir, sources.BTAD, normal_folder=NORMAL_FOLDER)
