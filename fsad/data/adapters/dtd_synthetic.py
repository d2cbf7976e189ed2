"""DTD-Synthetic (Aota et al., WACV 2023): 12 textures of the Describable Textures Dataset with synthetic defects.

The dataset is published in the MVTec layout (``<texture>/train/good``, ``<texture>/test/{good,<defect>}``,
``<texture>/ground_truth/<defect>/``), as AnomalyCLIP's ``generate_dataset_json/DTD.py`` reads it, on a Google Drive
folder without a checksum (:data:`fsad.data.sources.DTD_SYNTHETIC`), so it is placed by hand at
``raw_root(spec, data_dir)`` and read in place as the folder adapter reads a tree.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from fsad.data import sources
from fsad.data.adapters.folder import placed_mvtec_layout
from fsad.data.registry import DatasetSpec, register

# The 12 textures (AnomalyCLIP's DTD.py CLSNAMES).
CATEGORIES = [
    "Woven_001", "Woven_127", "Woven_104", "Stratified_154", "Blotchy_099", "Woven_068",
    "Woven_125", "Marbled_078", "Perforated_037", "Mesh_114", "Fibrous_183", "Matted_069",
]  # fmt: skip


def dtd_synthetic_categories(spec: DatasetSpec) -> list[str]:
    """The 12 DTD-Synthetic textures."""
    return list(CATEGORIES)


@register("dtd_synthetic", categories=dtd_synthetic_categories, has_masks=True)
def prepare_dtd_synthetic(spec: DatasetSpec, data_dir: Path) -> pd.DataFrame:
    """Manifest rows of the configured textures from the hand-placed files."""
    return placed_mvtec_layout(spec, data_dir, sources.DTD_SYNTHETIC)
