"""MVTec AD: 15 categories in the MVTec layout, downloaded from the source in :mod:`fsad.data.sources`.

When ``raw_root(spec, data_dir)`` (``spec['root']``, else ``data_dir/raw``) already holds the
categories (directly or one or two folders down), nothing is downloaded. Otherwise the tar.xz
(about 5 GB, CC BY-NC-SA 4.0) is downloaded to ``<root>/downloads/``, verified and extracted to
``<root>/extracted/``; the archive is kept so that a deleted extraction does not download again.
Images are referenced in place; the layout is read as the folder adapter reads it.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from fsad.data import sources
from fsad.data.adapters.folder import fetch_mvtec_layout
from fsad.data.registry import DatasetSpec, register

CATEGORIES = [
    "bottle", "cable", "capsule", "carpet", "grid", "hazelnut", "leather", "metal_nut",
    "pill", "screw", "tile", "toothbrush", "transistor", "wood", "zipper",
]  # fmt: skip


def mvtec_ad_categories(spec: DatasetSpec) -> list[str]:
    """The 15 MVTec AD categories."""
    return list(CATEGORIES)


@register("mvtec_ad", categories=mvtec_ad_categories, has_masks=True)
def prepare_mvtec_ad(spec: DatasetSpec, data_dir: Path) -> pd.DataFrame:
    """Manifest rows of the configured categories, downloading the archive when the files are not there."""
    return fetch_mvtec_layout(spec, data_dir, sources.MVTEC_AD)
