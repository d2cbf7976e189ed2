"""Medical datasets of FAPrompt and One-to-Normal, placed by hand and read in place.

None has a download with a published checksum, so each is placed at ``raw_root(spec, data_dir)`` (``spec['root']``,
else ``data_dir/raw``), directly or one or two folders down, as its source ships it; a missing one stops with the
source page (:mod:`fsad.data.sources`). Layouts and class names are those AnomalyCLIP's ``generate_dataset_json/``
reads (FAPrompt reads the same files):

* ``brainmri`` (Brain MRI Images for Brain Tumor Detection): ``no/`` normal, ``yes/`` tumour; category ``brain``.
* ``br35h`` (Br35H): ``no/`` normal, ``yes/`` tumour; category ``brain``.
* ``headct`` (Head CT - hemorrhage): ``labels.csv`` (``id, hemorrhage``) and ``head_ct/NNN.png`` (or
  ``head_ct/head_ct/``); category ``brain``.
* ``isic2016`` (ISBI 2016 ISIC part 1 test): ``ISBI2016_ISIC_Part1_Test_Data/<stem>.jpg`` and
  ``ISBI2016_ISIC_Part1_Test_GroundTruth/<stem>_Segmentation.png``; every image is a lesion with its mask; ``skin``.
* ``cvc_clinicdb``, ``cvc_colondb``, ``kvasir`` (Kvasir-SEG): ``images/`` and ``masks/`` with the same stems, every
  image a polyp with its mask; category ``colon``.
* ``tn3k`` (TN3K test set): ``test-image/`` and ``test-mask/``; every image a thyroid nodule with its mask;
  category ``thyroid``.
* ``endo`` (Endo: the EndoTect 2020 polyp segmentation test set, AnomalyCLIP's ``endoTect.py``): ``images/`` and
  ``masks/`` with the same stems (AnomalyCLIP pairs them by sorted name), every image a polyp; category ``colon``.
* ``lag`` (LAG database part 1, as FAPrompt's image-level table uses it): ``non_glaucoma/image/`` normal,
  ``suspicious_glaucoma/image/`` glaucoma; the ``attention_map/`` folders are eye-tracking maps, not anomaly masks,
  and are not read; category ``fundus``.

Every image is a test image (``protocol: test_only``, AnomalyCLIP's and FAPrompt's zero-shot protocol): such a
dataset has no normal training images, so it runs with zero-shot settings only (the split stage says so for a
few-shot setting). ``brainmri`` and ``headct`` also take ``protocol: inctrl`` (InCTRL's ``convert_BrainMRI.py`` and
``convert_HeadCT.py``, which One-to-Normal follows): normals split 75/25 into train/test by sklearn's
``train_test_split(test_size=0.25, random_state=42)`` (files by name, where InCTRL lists them in ``os.listdir``
order, so the split is fixed but not the reference's exact one; HeadCT in ``labels.csv`` order, as InCTRL).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from sklearn.model_selection import train_test_split

from fsad.data import sources
from fsad.data.adapters.folder import find_mask, image_files
from fsad.data.download import find_dataset_root
from fsad.data.manifest import MANIFEST_COLUMNS, manifest_row
from fsad.data.registry import DatasetSpec, raw_root, register

TEST_FRACTION = 0.25
SPLIT_SEED = 42

# (stem, image, mask or None, anomalous defect type or "good")
Item = tuple[str, Path, "Path | None", str]


@dataclass(frozen=True)
class MedicalLayout:
    """How one dataset lies on disk: ``is_root`` finds its folder, ``items`` lists its images in a fixed order."""

    category: str
    layout: str
    is_root: Callable[[Path], bool]
    items: Callable[[Path], list[Item]]
    has_masks: bool


def class_folder_items(normal: str, anomalous: str, defect_type: str) -> Callable[[Path], list[Item]]:
    """Images of ``root/<normal>/`` (normal) and ``root/<anomalous>/`` (``defect_type``), each by name."""

    def items(root: Path) -> list[Item]:
        return [(p.stem, p, None, "good") for p in image_files(root / normal)] + [
            (p.stem, p, None, defect_type) for p in image_files(root / anomalous)
        ]

    return items


def paired_mask_items(images: str, masks: str, defect_type: str, mask_suffix: str = "") -> Callable[[Path], list[Item]]:
    """Every image of ``root/<images>/`` anomalous, with its mask ``root/<masks>/<stem><mask_suffix>.*``."""

    def items(root: Path) -> list[Item]:
        listed = []
        for image in image_files(root / images):
            mask = find_mask(root / masks, f"{image.stem}{mask_suffix}")
            if mask is None:
                raise FileNotFoundError(f"{image}: no mask {image.stem}{mask_suffix}.* in {root / masks}; re-extract the dataset")
            listed.append((image.stem, image, mask, defect_type))
        return listed

    return items


def _head_ct_folder(root: Path) -> Path:
    return root / "head_ct" / "head_ct" if (root / "head_ct" / "head_ct").is_dir() else root / "head_ct"


def head_ct_items(root: Path) -> list[Item]:
    """``labels.csv`` rows in file order: ``id`` (image ``NNN.png``), ``hemorrhage`` (0 normal, 1 hemorrhage)."""
    labels = pd.read_csv(root / "labels.csv", skipinitialspace=True)
    if list(labels.columns[:2]) != ["id", "hemorrhage"] or not set(labels["hemorrhage"]) <= {0, 1}:
        raise ValueError(f"{root / 'labels.csv'}: expected columns id, hemorrhage (0 or 1); is this the Head CT labels file?")
    folder, listed = _head_ct_folder(root), []
    for image_id, label in zip(labels["id"], labels["hemorrhage"]):
        image = folder / f"{int(image_id):03d}.png"
        if not image.is_file():
            raise FileNotFoundError(f"{image}: listed in {root / 'labels.csv'} but missing; re-extract Head CT")
        listed.append((image.stem, image, None, "hemorrhage" if label else "good"))
    return listed


def _has(*names: str) -> Callable[[Path], bool]:
    return lambda folder: all((folder / name).is_dir() for name in names)


LAYOUTS: dict[str, tuple[MedicalLayout, sources.ManualSource]] = {
    "brainmri": (MedicalLayout("brain", "no/*.jpg and yes/*.jpg", _has("no", "yes"), class_folder_items("no", "yes", "tumor"), False), sources.BRAIN_MRI),
    "br35h": (MedicalLayout("brain", "no/*.jpg and yes/*.jpg", _has("no", "yes"), class_folder_items("no", "yes", "tumor"), False), sources.BR35H),
    "headct": (
        MedicalLayout("brain", "labels.csv and head_ct/NNN.png", lambda f: (f / "labels.csv").is_file() and (f / "head_ct").is_dir(), head_ct_items, False),
        sources.HEAD_CT,
    ),
    "isic2016": (
        MedicalLayout(
            "skin",
            "ISBI2016_ISIC_Part1_Test_Data/*.jpg and ISBI2016_ISIC_Part1_Test_GroundTruth/*_Segmentation.png",
            _has("ISBI2016_ISIC_Part1_Test_Data", "ISBI2016_ISIC_Part1_Test_GroundTruth"),
            paired_mask_items("ISBI2016_ISIC_Part1_Test_Data", "ISBI2016_ISIC_Part1_Test_GroundTruth", "lesion", "_Segmentation"),
            True,
        ),
        sources.ISIC_2016,
    ),
    "cvc_clinicdb": (MedicalLayout("colon", "images/ and masks/", _has("images", "masks"), paired_mask_items("images", "masks", "polyp"), True), sources.CVC_CLINICDB),
    "cvc_colondb": (MedicalLayout("colon", "images/ and masks/", _has("images", "masks"), paired_mask_items("images", "masks", "polyp"), True), sources.CVC_COLONDB),
    "kvasir": (MedicalLayout("colon", "images/ and masks/", _has("images", "masks"), paired_mask_items("images", "masks", "polyp"), True), sources.KVASIR_SEG),
    "tn3k": (
        MedicalLayout("thyroid", "test-image/ and test-mask/", _has("test-image", "test-mask"), paired_mask_items("test-image", "test-mask", "nodule"), True),
        sources.TN3K,
    ),
    "endo": (MedicalLayout("colon", "images/ and masks/", _has("images", "masks"), paired_mask_items("images", "masks", "polyp"), True), sources.ENDOTECT),
    "lag": (
        MedicalLayout(
            "fundus",
            "non_glaucoma/image/*.jpg and suspicious_glaucoma/image/*.jpg",
            _has("non_glaucoma/image", "suspicious_glaucoma/image"),
            class_folder_items("non_glaucoma/image", "suspicious_glaucoma/image", "glaucoma"),
            False,
        ),
        sources.LAG,
    ),
}


def medical_rows(layout: MedicalLayout, items: list[Item], protocol: str) -> pd.DataFrame:
    """Manifest rows: every image test (``test_only``), or the normals split 75/25 (``inctrl``)."""
    normal = [stem for stem, _, _, defect in items if defect == "good"]
    train = set()
    if protocol == "inctrl":
        if len(normal) < 2:
            raise ValueError(f"{len(normal)} normal images: too few to split 75/25 (protocol inctrl)")
        train = set(train_test_split(normal, test_size=TEST_FRACTION, random_state=SPLIT_SEED)[0])
    rows = [
        manifest_row(layout.category, "train" if stem in train else "test", defect, stem, image, mask or "")
        for stem, image, mask, defect in items
    ]
    return pd.DataFrame(rows, columns=MANIFEST_COLUMNS)


def prepare_medical(kind: str, data_dir: Path, spec: DatasetSpec, protocol: str = "test_only") -> pd.DataFrame:
    """Manifest rows of the hand-placed files of ``kind`` (a key of :data:`LAYOUTS`)."""
    layout, source = LAYOUTS[kind]
    root = raw_root(spec, data_dir)
    found = find_dataset_root(root, layout.is_root)
    if found is None:
        raise FileNotFoundError(source.missing(root, layout.layout))
    items = layout.items(found)
    if not items:
        raise FileNotFoundError(f"{found}: no images in {layout.layout}; re-extract {source.name}")
    return medical_rows(layout, items, protocol)


def _category(kind: str) -> Callable[[DatasetSpec], list[str]]:
    return lambda spec: [LAYOUTS[kind][0].category]


@register("brainmri", categories=_category("brainmri"), has_masks=False)
def prepare_brainmri(spec: DatasetSpec, data_dir: Path) -> pd.DataFrame:
    """BrainMRI: test-only, or InCTRL's 75/25 normal split (``protocol``, brainmri.schema.yaml)."""
    return prepare_medical("brainmri", data_dir, spec, spec["protocol"])


@register("headct", categories=_category("headct"), has_masks=False)
def prepare_headct(spec: DatasetSpec, data_dir: Path) -> pd.DataFrame:
    """HeadCT: test-only, or InCTRL's 75/25 normal split (``protocol``, headct.schema.yaml)."""
    return prepare_medical("headct", data_dir, spec, spec["protocol"])


def _register_test_only(kind: str) -> None:
    layout, source = LAYOUTS[kind]

    def prepare(spec: DatasetSpec, data_dir: Path) -> pd.DataFrame:
        return prepare_medical(kind, data_dir, spec)

    prepare.__doc__ = f"{source.name}: manifest rows of the hand-placed files, every image a test image."
    register(kind, categories=_category(kind), has_masks=layout.has_masks)(prepare)


# The test-only sets take no options.
for _kind in ("br35h", "isic2016", "cvc_clinicdb", "cvc_colondb", "kvasir", "tn3k", "endo", "lag"):
    _register_test_only(_kind)
