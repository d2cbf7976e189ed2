"""ELPV: electroluminescence images of solar cells (pip package ``elpv-dataset``).

The package ships 2624 greyscale 300x300 PNGs (``data/images/cellNNNN.png``) and ``data/labels.csv``
with, per cell, the experts' defect probability (0, 1/3, 2/3 or 1) and the cell type (mono or poly).
Categories are the cell types ``mono`` and ``poly``.

* normal: probability 0 (label 0, defect_type ``good``);
* anomalous: probability above ``spec['anomaly_threshold']`` (declared in ``elpv.schema.yaml``; label 1,
  defect_type the rounded probability, ``p0.67`` or ``p1.00``);
* cells in between (0 < p <= threshold; 1/3 at the default) are uncertain and dropped.

There are no pixel masks. The package has no train/test split: normal cells are assigned by the
fixed hash rule of :mod:`fsad.data.adapters.normal_split` (about half to train); every anomalous
cell is test. The PNGs are referenced in place; nothing is copied. ``spec['root']`` may point at
another copy of the package's ``data`` folder.

``protocol: inctrl`` (``elpv.schema.yaml``) follows InCTRL's ``convert_elpv.py``, which One-to-Normal and FAPrompt
use: one category ``elpv``; normal = probability 0, anomalous = probability 1.0 only (defect type the cell type,
``mono`` or ``poly``; 1/3 and 2/3 dropped, ``anomaly_threshold`` unused); the normals, in ``labels.csv`` order, split
75/25 into train/test by sklearn's ``train_test_split(test_size=0.25, random_state=42)``.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from sklearn.model_selection import train_test_split

from fsad.data.adapters.normal_split import normal_split
from fsad.data.manifest import MANIFEST_COLUMNS, manifest_row
from fsad.data.registry import DatasetSpec, register

CELL_TYPES = ["mono", "poly"]
INCTRL_CATEGORY = "elpv"
INCTRL_TEST_FRACTION = 0.25
INCTRL_SPLIT_SEED = 42


def elpv_categories(spec: DatasetSpec) -> list[str]:
    """Cell types, one category each; the one category ``elpv`` under ``protocol: inctrl``."""
    return [INCTRL_CATEGORY] if spec["protocol"] == "inctrl" else list(CELL_TYPES)


def elpv_root(spec: DatasetSpec) -> Path:
    """The folder holding ``labels.csv`` and ``images/``: ``spec['root']`` when set, else the installed package's."""
    if spec.get("root"):
        return Path(spec["root"]).expanduser().resolve()
    try:
        from importlib.resources import files

        return Path(str(files("elpv_dataset") / "data")).resolve()
    except ModuleNotFoundError as err:
        raise ImportError(
            f"dataset {spec.get('name', 'elpv')!r} (kind elpv) needs the package elpv-dataset; "
            "install it with `pip install elpv-dataset`"
        ) from err


def read_elpv_labels(labels_csv: Path) -> pd.DataFrame:
    """``labels.csv`` as columns ``path`` (relative), ``probability`` (float) and ``cell_type``."""
    if not labels_csv.exists():
        raise FileNotFoundError(f"{labels_csv}: ELPV labels not found; reinstall elpv-dataset or fix the dataset's `root`")
    labels = pd.read_csv(labels_csv, sep=r"\s+", header=None, names=["path", "probability", "cell_type"])
    unknown = sorted(set(labels["cell_type"]) - set(CELL_TYPES))
    if unknown or labels["probability"].isna().any():
        raise ValueError(f"{labels_csv}: unexpected cell types {unknown} or missing probabilities; is this the ELPV labels file?")
    return labels


@register("elpv", categories=elpv_categories, has_masks=False)
def prepare_elpv(spec: DatasetSpec, data_dir: Path) -> pd.DataFrame:
    """Manifest rows: normal (p = 0) and anomalous cells (p > threshold, or p = 1 under InCTRL's protocol)."""
    root = elpv_root(spec)
    labels = read_elpv_labels(root / "labels.csv")
    for path in labels["path"]:
        if not (root / path).exists():
            raise FileNotFoundError(f"{root / path}: listed in {root / 'labels.csv'} but missing; reinstall elpv-dataset")
    if spec["protocol"] == "inctrl":
        return _inctrl_rows(root, labels)
    threshold = spec["anomaly_threshold"]  # in [0, 1): elpv.schema.yaml
    rows = []
    for path, probability, cell_type in labels.itertuples(index=False):
        if probability == 0:
            defect_type = "good"
        elif probability > threshold:
            defect_type = f"p{probability:.2f}"
        else:
            continue
        stem = Path(path).stem
        split = normal_split("elpv", stem) if defect_type == "good" else "test"
        rows.append(manifest_row(cell_type, split, defect_type, stem, root / path))
    return pd.DataFrame(rows, columns=MANIFEST_COLUMNS)


def _inctrl_rows(root: Path, labels: pd.DataFrame) -> pd.DataFrame:
    """InCTRL's partition: one category, p = 1 anomalous (test, defect type the cell type), normals split 75/25."""
    normal = list(labels.loc[labels["probability"] == 0, "path"])
    train, _ = train_test_split(normal, test_size=INCTRL_TEST_FRACTION, random_state=INCTRL_SPLIT_SEED)
    train = set(train)
    rows = [manifest_row(INCTRL_CATEGORY, "train" if p in train else "test", "good", Path(p).stem, root / p) for p in normal]
    anomalous = labels[labels["probability"] == 1]
    rows += [manifest_row(INCTRL_CATEGORY, "test", t, Path(p).stem, root / p) for p, _, t in anomalous.itertuples(index=False)]
    return pd.DataFrame(rows, columns=MANIFEST_COLUMNS)
