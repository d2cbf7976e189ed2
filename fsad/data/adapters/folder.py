"""Folder: any dataset in the MVTec AD layout at ``spec['root']``.

Layout, per category (a subfolder of the root that has ``train/``)::

    <category>/train/good/*.png                       normal training images
    <category>/test/good/*.png                        normal test images
    <category>/test/<defect_type>/*.png               anomalous test images
    <category>/ground_truth/<defect_type>/<stem>_mask.png   (optional) pixel masks

Images may be png, jpg, jpeg, bmp, tif(f) or webp. A mask is ``<stem>_mask.*`` or ``<stem>.*`` in
``ground_truth/<defect_type>/``. When that folder exists every anomalous image of the defect type
needs its mask (a missing one is an error); when it does not, the defect type has no masks
(``mask_path`` empty). Images are referenced in place. :func:`mvtec_layout_rows`,
:func:`fetch_mvtec_layout` (downloaded) and :func:`placed_mvtec_layout` (placed by hand) serve the adapters of datasets
shipped in this layout (mvtec_ad, btad, mpdd, dtd_synthetic).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from fsad.data.download import fetch_dataset, find_dataset_root
from fsad.data.manifest import MANIFEST_COLUMNS, manifest_row
from fsad.data.registry import DatasetSpec, dataset_categories, raw_root, register
from fsad.data.sources import DownloadSource, ManualSource

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}
SPLIT_FOLDERS = ("train", "test")


def image_files(folder: Path) -> list[Path]:
    """Image files directly in ``folder`` (hidden files skipped), sorted by name."""
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".") and p.is_file())


def folder_root(spec: DatasetSpec) -> Path:
    """``spec['root']``, which must exist."""
    if not spec.get("root"):
        raise ValueError(f"dataset {spec.get('name')!r} (kind folder): set `root` to the folder holding the categories")
    root = Path(spec["root"]).expanduser().resolve()
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: dataset {spec.get('name')!r} (kind folder) root not found; fix `root` in the config")
    return root


def folder_categories(spec: DatasetSpec) -> list[str]:
    """Subfolders of the root that hold ``train/``, sorted."""
    root = folder_root(spec)
    categories = sorted(p.name for p in root.iterdir() if (p / "train").is_dir() and not p.name.startswith("."))
    if not categories:
        raise FileNotFoundError(f"{root}: no category folders with a train/ subfolder; expected <category>/train/good/*.png")
    return categories


def find_mask(mask_folder: Path, stem: str) -> Path | None:
    """The mask of image ``stem`` in ``mask_folder``: ``<stem>_mask.*`` or ``<stem>.*``."""
    for name in (f"{stem}_mask", stem):
        for suffix in sorted(IMAGE_SUFFIXES):
            for candidate in (mask_folder / f"{name}{suffix}", mask_folder / f"{name}{suffix.upper()}"):
                if candidate.is_file():
                    return candidate
    return None


def mvtec_layout_rows(root: Path, categories: list[str], normal_folder: str = "good") -> pd.DataFrame:
    """Manifest rows for ``categories`` of an MVTec-layout tree at ``root``.

    Args:
        root: folder holding one subfolder per category.
        categories: the categories to read; each needs ``<category>/train/``.
        normal_folder: name of the folders of normal images (BTAD: ``ok``); they get the defect
            type ``good``. Other folders are defect types.
    """
    rows = []
    for category in categories:
        category_dir = root / category
        if not (category_dir / "train").is_dir():
            raise FileNotFoundError(f"{category_dir / 'train'}: missing; expected <category>/train/good/ under {root}")
        for split in SPLIT_FOLDERS:
            split_dir = category_dir / split
            if not split_dir.is_dir():
                raise FileNotFoundError(f"{split_dir}: missing; expected <category>/{split}/<defect_type>/ under {root}")
            for defect_dir in sorted(p for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
                defect_type = "good" if defect_dir.name == normal_folder else defect_dir.name
                mask_dir = category_dir / "ground_truth" / defect_dir.name
                for image in image_files(defect_dir):
                    mask = ""
                    if defect_type != "good" and mask_dir.is_dir():
                        mask = find_mask(mask_dir, image.stem)
                        if mask is None:
                            raise FileNotFoundError(
                                f"{image}: no mask {image.stem}_mask.png (or {image.stem}.png) in {mask_dir}; "
                                "add it, or remove the ground_truth folder if this defect type has no masks"
                            )
                    rows.append(manifest_row(category, split, defect_type, image.stem, image, mask))
    if not rows:
        raise FileNotFoundError(f"{root}: no images found for categories {categories}")
    return pd.DataFrame(rows, columns=MANIFEST_COLUMNS)


def is_mvtec_layout(folder: Path, categories: list[str], normal_folder: str = "good") -> bool:
    """True when every category of ``categories`` has ``train/<normal_folder>/`` and ``test/`` under ``folder``."""
    return all((folder / c / "train" / normal_folder).is_dir() and (folder / c / "test").is_dir() for c in categories)


def fetch_mvtec_layout(spec: DatasetSpec, data_dir: Path, source: DownloadSource, normal_folder: str = "good") -> pd.DataFrame:
    """Manifest rows of the configured categories of a dataset published as an MVTec-layout archive.

    The files are used in place when ``raw_root(spec, data_dir)`` holds them (directly or one or two
    folders down); otherwise ``source`` is downloaded, verified and extracted there first.
    """
    categories = dataset_categories(spec)
    root = fetch_dataset(
        source,
        raw_root(spec, data_dir),
        lambda folder: is_mvtec_layout(folder, categories, normal_folder),
        layout=f"<category>/train/{normal_folder} and <category>/test for {categories}",
    )
    return mvtec_layout_rows(root, categories, normal_folder)


def placed_mvtec_layout(spec: DatasetSpec, data_dir: Path, source: ManualSource, item: str = "category") -> pd.DataFrame:
    """Manifest rows of the configured categories of an MVTec-layout dataset placed by hand at ``raw_root``;
    ``item`` is what the dataset calls a category (MPDD: part), for the message.

    Raises:
        FileNotFoundError: :meth:`ManualSource.missing`, naming the source page and where to put the files.
    """
    categories = dataset_categories(spec)
    root = raw_root(spec, data_dir)
    found = find_dataset_root(root, lambda folder: is_mvtec_layout(folder, categories))
    if found is None:
        layout = f"<{item}>/train/good, <{item}>/test/<defect_type> and <{item}>/ground_truth/<defect_type>/<stem>_mask.png"
        raise FileNotFoundError(source.missing(root, f"{layout} for the {item}s {', '.join(categories)}"))
    return mvtec_layout_rows(found, categories)


@register("folder", categories=folder_categories, has_masks=True)
def prepare_folder(spec: DatasetSpec, data_dir: Path) -> pd.DataFrame:
    """Manifest rows for the configured categories under ``spec['root']`` (paths in place)."""
    return mvtec_layout_rows(folder_root(spec), dataset_categories(spec))
