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
from fsad.data.adapters.folder import is_mvtec_layout, mvtec_layout_rows
from fsad.data.download import find_dataset_root
from fsad.data.registry import DatasetSpec, dataset_categories, raw_root, register

CATEGORIES = ["bracket_black", "bracket_brown", "bracket_white", "connector", "metal_plate", "tubes"]


def mpdd_categories(spec: DatasetSpec) -> list[str]:
    """The six MPDD parts."""
    return list(CATEGORIES)


def missing_mpdd_message(root: Path, categories: list[str]) -> str:
    """What to download and where to put it."""
    return (
        f"{root}: MPDD not found (looked for <part>/train and <part>/test for {categories}). "
        f"MPDD has no direct download: open {sources.MPDD_README_URL} and follow its README's download link "
        "(a VUT / Brno University of Technology SharePoint folder), then unpack it so that "
        f"{root}/<part>/train/good, {root}/<part>/test/<defect_type> and {root}/<part>/ground_truth/<defect_type>/<stem>_mask.png "
        f"exist for the parts {', '.join(CATEGORIES)}; or set the dataset's `root` to where they already are."
    )


@register("mpdd", categories=mpdd_categories, has_masks=True)
def prepare_mpdd(spec: DatasetSpec, data_dir: Path) -> pd.DataFrame:
    """Manifest rows of the configured parts from the hand-placed files."""
    categories = dataset_categories(spec)
    root = raw_root(spec, data_dir)
    found = find_dataset_root(root, lambda folder: is_mvtec_layout(folder, categories))
    if found is None:
        raise FileNotFoundError(missing_mpdd_message(root, categories))
    return mvtec_layout_rows(found, categories)
