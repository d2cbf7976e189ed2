"""AITEX (AFID, the AITEX Fabric Image Database; One-to-Normal's "AFID"), cut into crops as InCTRL does.

The database holds 4096x256 greyscale fabric images: ``NODefect_images/<fabric folder>/*.png`` (defect-free),
``Defect_images/<nnnn>_<code>_<nn>.png`` (defective, ``code`` the defect type) and
``Mask_images/<stem>_mask.png`` (their masks); the two last may sit one folder deeper (``Defect_images/Defect_images``)
as the archives unpack. As InCTRL's ``convert_AITEX.py`` (One-to-Normal follows InCTRL's partitions):

* every defect-free image gives 16 crops of 256 columns (columns ``[256 i, 256 (i + 1))``), all normal;
* every defective image of height H and width W gives ``ceil(W / H)`` such crops; a crop is kept, anomalous, only
  when its mask crop has a non-zero pixel; its defect type is the name of the image's defect code
  (:data:`DEFECT_TYPES`);
* normal crops are split 75/25 into train/test with sklearn's ``train_test_split(test_size=0.25, random_state=42)``;
  every anomalous crop is test. The reference lists files in ``os.listdir`` order, which is not reproducible; here
  the crops are listed as it lists them but with fabric folders in natural order (``fabric2`` before ``fabric10``)
  and files by name, each image's crops 0 to 15, so the split is fixed but not the reference's exact one.

Crops (RGB PNG) and binarised masks (0/255) are written once to ``data_dir/aitex_crops/fabric/`` in the MVTec layout,
named ``<fabric folder>_<stem>_<i>`` (normal) and ``<stem>_<i>`` (defective); the one category is ``fabric``. AITEX
has no download with a published checksum (:data:`fsad.data.sources.AITEX`): it is placed by hand at
``raw_root(spec, data_dir)``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from sklearn.model_selection import train_test_split

from fsad.data import sources
from fsad.data.adapters.folder import image_files, mvtec_layout_rows
from fsad.data.adapters.sdd import natural_key
from fsad.data.download import built_once, find_dataset_root
from fsad.data.registry import DatasetSpec, raw_root, register

CATEGORY = "fabric"
CROP_WIDTH = 256
NORMAL_CROPS = 16
TEST_FRACTION = 0.25
SPLIT_SEED = 42
# The defect codes of the AITEX file names (InCTRL's convert_AITEX.py).
DEFECT_TYPES = {
    "002": "Broken_end", "006": "Broken_yarn", "010": "Broken_pick", "016": "Weft_curling", "019": "Fuzzyball",
    "022": "Cut_selvage", "023": "Crease", "025": "Warp_ball", "027": "Knots", "029": "Contamination", "030": "Nep",
    "036": "Weft_crack",
}  # fmt: skip
LAYOUT = "NODefect_images/<fabric>/*.png, Defect_images/*.png and Mask_images/*_mask.png"


def aitex_categories(spec: DatasetSpec) -> list[str]:
    """AITEX is one category."""
    return [CATEGORY]


def _inner(folder: Path) -> Path:
    """``folder``, or ``folder/<its name>`` when the archive nested it so."""
    return folder / folder.name if (folder / folder.name).is_dir() else folder


def is_aitex_layout(folder: Path) -> bool:
    """True when ``folder`` holds the three AITEX folders."""
    return all((folder / name).is_dir() for name in ("NODefect_images", "Defect_images", "Mask_images"))


def read_grey(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("L"))


def write_aitex_crops(aitex_root: Path, crops_dir: Path) -> Path:
    """Write the crops of every AITEX image to ``crops_dir/<CATEGORY>/`` (MVTec layout), once."""

    def build(staging: Path) -> None:
        category_dir = staging / CATEGORY
        normal = {}
        for fabric in sorted((d for d in (aitex_root / "NODefect_images").iterdir() if d.is_dir()), key=lambda d: natural_key(d.name)):
            for image_path in image_files(fabric):
                pixels = read_grey(image_path)
                if pixels.shape[1] < NORMAL_CROPS * CROP_WIDTH:
                    raise ValueError(f"{image_path}: {pixels.shape[1]} columns, fewer than {NORMAL_CROPS} crops of {CROP_WIDTH}")
                for i in range(NORMAL_CROPS):
                    normal[f"{fabric.name}_{image_path.stem}_{i}"] = pixels[:, i * CROP_WIDTH : (i + 1) * CROP_WIDTH]
        if not normal:
            raise FileNotFoundError(f"{aitex_root / 'NODefect_images'}: no defect-free images; {sources.AITEX.missing(aitex_root, LAYOUT)}")
        train, test = train_test_split(list(normal), test_size=TEST_FRACTION, random_state=SPLIT_SEED)
        for split, names in (("train", train), ("test", test)):
            (category_dir / split / "good").mkdir(parents=True, exist_ok=True)
            for name in names:
                Image.fromarray(normal[name]).convert("RGB").save(category_dir / split / "good" / f"{name}.png")
        masks = _inner(aitex_root / "Mask_images")
        for image_path in image_files(_inner(aitex_root / "Defect_images")):
            code = image_path.stem.split("_")[1] if image_path.stem.count("_") >= 1 else ""
            if code not in DEFECT_TYPES:
                raise ValueError(f"{image_path}: defect code {code!r} is not one of AITEX's {sorted(DEFECT_TYPES)}")
            mask_path = masks / f"{image_path.stem}_mask.png"
            if not mask_path.is_file():
                raise FileNotFoundError(f"{mask_path}: mask of {image_path} missing; re-extract AITEX's Mask_images")
            pixels, mask = read_grey(image_path), read_grey(mask_path) != 0
            if pixels.shape != mask.shape:
                raise ValueError(f"{image_path}: size {pixels.shape} differs from its mask {mask_path} {mask.shape}")
            height, width = pixels.shape
            for i in range(-(-width // height)):
                crop_mask = mask[:, i * CROP_WIDTH : (i + 1) * CROP_WIDTH]
                if not crop_mask.any():
                    continue
                defect = DEFECT_TYPES[code]
                for folder in (category_dir / "test" / defect, category_dir / "ground_truth" / defect):
                    folder.mkdir(parents=True, exist_ok=True)
                name = f"{image_path.stem}_{i}"
                Image.fromarray(pixels[:, i * CROP_WIDTH : (i + 1) * CROP_WIDTH]).convert("RGB").save(category_dir / "test" / defect / f"{name}.png")
                Image.fromarray(crop_mask.astype(np.uint8) * 255).save(category_dir / "ground_truth" / defect / f"{name}_mask.png")

    return built_once(crops_dir, "building", build)


@register("aitex", categories=aitex_categories, has_masks=True)
def prepare_aitex(spec: DatasetSpec, data_dir: Path) -> pd.DataFrame:
    """Manifest rows of the AITEX crops, cutting them on the first call."""
    root = raw_root(spec, data_dir)
    found = find_dataset_root(root, is_aitex_layout)
    if found is None:
        raise FileNotFoundError(sources.AITEX.missing(root, LAYOUT))
    return mvtec_layout_rows(write_aitex_crops(found, Path(data_dir).resolve() / "aitex_crops"), [CATEGORY])
