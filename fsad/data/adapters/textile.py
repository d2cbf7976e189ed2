"""Textile: simulated fabric images with local and global defects (pip package ``conformal-clip-data``).

The package ships 250x250 RGB JPEGs in ``textile_images/simulated/{nominal,local,global}``:
1000 nominal images and 500 each with a small local defect or a global texture change. Nominal
images are normal (label 0, defect_type ``good``); ``local`` and ``global`` images are anomalous
(label 1, defect_type ``local`` / ``global``). There are no pixel masks.

The package has no train/test split: nominal images are assigned by the fixed hash rule of
:mod:`fsad.data.adapters.normal_split` (about half to train); every anomalous image is test.
Images are referenced in place (absolute paths into site-packages); nothing is copied.
``spec['root']`` may point at another copy of the ``simulated`` folder.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from fsad.data.adapters.normal_split import normal_split
from fsad.data.manifest import MANIFEST_COLUMNS, manifest_row
from fsad.data.registry import DatasetSpec, register

CATEGORY = "textile"
DEFECT_FOLDERS = {"nominal": "good", "local": "local", "global": "global"}


def textile_categories(spec: DatasetSpec) -> list[str]:
    """The package holds one category."""
    return [CATEGORY]


def textile_root(spec: DatasetSpec) -> Path:
    """The ``simulated`` folder: ``spec['root']`` when set, else the installed package's copy."""
    if spec.get("root"):
        return Path(spec["root"]).expanduser().resolve()
    try:
        import conformal_clip_data
    except ImportError as err:
        raise ImportError(
            f"dataset {spec.get('name', CATEGORY)!r} (kind textile) needs the package conformal-clip-data; "
            "install it with `pip install conformal-clip-data`"
        ) from err
    return Path(conformal_clip_data.textile_simulated_root()).resolve()


@register("textile", categories=textile_categories, has_masks=False)
def prepare_textile(spec: DatasetSpec, data_dir: Path) -> pd.DataFrame:
    """Manifest rows for every textile image (paths in place, normals split by hash)."""
    root = textile_root(spec)
    rows = []
    for folder, defect_type in DEFECT_FOLDERS.items():
        images = sorted((root / folder).glob("*.jpg"))
        if not images:
            raise FileNotFoundError(
                f"{root / folder}: no *.jpg images; reinstall conformal-clip-data "
                "(`pip install --force-reinstall conformal-clip-data`) or fix the dataset's `root`"
            )
        for path in images:
            split = normal_split("textile", path.stem) if defect_type == "good" else "test"
            rows.append(manifest_row(CATEGORY, split, defect_type, path.stem, path))
    return pd.DataFrame(rows, columns=MANIFEST_COLUMNS)
