"""MPDD (Metal Parts Defect Detection): six metal parts in the MVTec layout, placed by hand.

MPDD has no direct download link (the MPDD README points to a VUT SharePoint folder) and no
published checksum, so this adapter never downloads: the files must be at
``raw_root(spec, data_dir)`` (``spec['root']``, else ``<results_dir>/data/<name>/raw``), directly or
one or two folders down, as ``<part>/train/good``, ``<part>/test/<defect_type>``,
``<part>/ground_truth/<defect_type>/<stem>_mask.png``. Then it reads them as the folder adapter does.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from fsad.data import sources
from fsad.data.adapters.folder import placed_mvtec_layout
from fsad.data.registry import DatasetSpec, register

CATEGORIES = ["bracket_black", "bracket_brown", "bracket_white", "connector", "metal_plate", "tubes"]


def mpdd_categories(spec: DatasetSpec) -> list[str]:
    """The six MPDD parts."""
    return list(CATEGORIES)


@register("mpdd", categories=mpdd_categories, has_masks=True)
def prepare_mpdd(spec: DatasetSpec, data_dir: Path) -> pd.DataFrame:
    """Manifest rows of the configured parts from the hand-placed files."""
    return placed_mvtec_layout(spec, data_dir, sources.MPDD, item="part")
