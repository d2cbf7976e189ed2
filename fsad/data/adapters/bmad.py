"""OCT2017 and RESC, the two retinal OCT sets of BMAD (Benchmarks for Medical Anomaly Detection), as One-to-Normal uses.

BMAD (Bao et al., 2023) re-partitions six public medical sets into normal training images and labelled validation
and test sets; anomalib's BMAD module downloads them as one zip with a published sha256
(:data:`fsad.data.sources.BMAD`). The zip holds one folder per set; this module reads two of them:

* ``oct2017`` (``Retina_OCT2017``: Kermany et al.'s OCT2017, CNV, DME and drusen merged into one anomalous class),
  image-level labels only;
* ``resc`` (``Retina_RESC``: the Retinal Edema Segmentation Challenge), with a pixel mask per anomalous test image.

Layout of each set's folder (the files used in place when ``raw_root(spec, data_dir)`` holds the BMAD folder,
directly or one or two folders down; else the zip is downloaded, verified and unpacked there)::

    <set>/train/good/*.png                      normal training images
    <set>/{valid,test}/good/[img/]*.png          normal images
    <set>/{valid,test}/Ungood/[img/]*.png        anomalous images
    <set>/{valid,test}/Ungood/label/<stem>.png   their masks (RESC; the sets without masks have no label/ folder)

Partition (One-to-Normal follows InCTRL, whose paper has no OCT set, so the partition is BMAD's own): ``train/good``
is ``train``, ``test`` is ``test``; BMAD's small ``valid`` split is not read (the pipeline draws its own validation
images from the training normals). The one category is ``retina``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from fsad.data import sources
from fsad.data.adapters.folder import find_mask, image_files
from fsad.data.download import fetch_dataset
from fsad.data.manifest import MANIFEST_COLUMNS, manifest_row
from fsad.data.registry import DatasetSpec, raw_root, register

CATEGORY = "retina"
NORMAL_FOLDER, ANOMALOUS_FOLDER = "good", "Ungood"
IMAGE_FOLDER, MASK_FOLDER = "img", "label"


@dataclass(frozen=True)
class BmadSet:
    """One BMAD set: its folder in the zip, the defect type of its anomalous images, whether they have masks."""

    folder: str
    defect_type: str
    has_masks: bool


SETS = {
    "oct2017": BmadSet("Retina_OCT2017", "retinal_disease", False),
    "resc": BmadSet("Retina_RESC", "retinal_edema", True),
}


def _images(folder: Path) -> list[Path]:
    """The images of a class folder: in its ``img/`` subfolder when it has one, else directly in it."""
    return image_files(folder / IMAGE_FOLDER if (folder / IMAGE_FOLDER).is_dir() else folder)


def bmad_rows(set_root: Path, bmad_set: BmadSet) -> pd.DataFrame:
    """Manifest rows of one BMAD set's folder: ``train/good`` as train, ``test/{good,Ungood}`` as test."""
    rows = []
    for split, class_folders in (("train", [NORMAL_FOLDER]), ("test", [NORMAL_FOLDER, ANOMALOUS_FOLDER])):
        for class_folder in class_folders:
            folder = set_root / split / class_folder
            if not folder.is_dir():
                raise FileNotFoundError(f"{folder}: missing; expected {bmad_set.folder}/{split}/{class_folder}/ (BMAD's layout); re-extract bmad.zip")
            defect_type = "good" if class_folder == NORMAL_FOLDER else bmad_set.defect_type
            for image in _images(folder):
                mask = ""
                if defect_type != "good" and bmad_set.has_masks:
                    mask = find_mask(folder / MASK_FOLDER, image.stem) if (folder / MASK_FOLDER).is_dir() else None
                    if mask is None:
                        raise FileNotFoundError(f"{image}: no mask {image.stem}.png in {folder / MASK_FOLDER}; re-extract bmad.zip")
                rows.append(manifest_row(CATEGORY, split, defect_type, image.stem, image, mask))
    if not any(row["split"] == "train" for row in rows) or not any(row["split"] == "test" for row in rows):
        raise FileNotFoundError(f"{set_root}: no images in train/good or test/; re-extract bmad.zip")
    return pd.DataFrame(rows, columns=MANIFEST_COLUMNS)


def prepare_bmad(kind: str, spec: DatasetSpec, data_dir: Path) -> pd.DataFrame:
    """Manifest rows of the BMAD set of ``kind`` (a key of :data:`SETS`), downloading BMAD first when it is absent."""
    bmad_set = SETS[kind]
    bmad_root = fetch_dataset(
        sources.BMAD,
        raw_root(spec, data_dir),
        lambda folder: (folder / bmad_set.folder / "train" / NORMAL_FOLDER).is_dir(),
        layout=f"{bmad_set.folder}/train/good and {bmad_set.folder}/test/{{good,Ungood}}",
    )
    return bmad_rows(bmad_root / bmad_set.folder, bmad_set)


def bmad_categories(spec: DatasetSpec) -> list[str]:
    """The one category, ``retina``."""
    return [CATEGORY]


@register("oct2017", categories=bmad_categories, has_masks=False)
def prepare_oct2017(spec: DatasetSpec, data_dir: Path) -> pd.DataFrame:
    """OCT2017 (BMAD's Retina_OCT2017): BMAD's train normals and test set, image labels only."""
    return prepare_bmad("oct2017", spec, data_dir)


@register("resc", categories=bmad_categories, has_masks=True)
def prepare_resc(spec: DatasetSpec, data_dir: Path) -> pd.DataFrame:
    """RESC (BMAD's Retina_RESC): BMAD's train normals and test set, a mask per anomalous test image."""
    return prepare_bmad("resc", spec, data_dir)
