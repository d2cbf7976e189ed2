"""The dataset manifest: one row per image, shared by every later stage."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from fsad.io import atomic_path

MANIFEST_COLUMNS = ["image_id", "category", "split", "label", "defect_type", "image_path", "mask_path"]
SPLITS = ("train", "test")
IMAGE_ID_PATTERN = re.compile(r"^[A-Za-z0-9_.+-]+$")


def make_image_id(*parts: str) -> str:
    """Build an image id from path-like parts (``category, split, defect_type, stem``).

    Ids are used as HDF5 keys and file names, so anything outside ``[A-Za-z0-9_.+-]`` becomes ``_``.
    """
    return "-".join(re.sub(r"[^A-Za-z0-9_.+]", "_", str(p)) for p in parts)


def manifest_row(
    category: str, split: str, defect_type: str, stem: str, image_path: str | Path, mask_path: str | Path = ""
) -> dict[str, object]:
    """One manifest row; the id is ``make_image_id(category, split, defect_type, stem)``, the label 0 iff ``defect_type == 'good'``."""
    return {
        "image_id": make_image_id(category, split, defect_type, stem),
        "category": category,
        "split": split,
        "label": int(defect_type != "good"),
        "defect_type": defect_type,
        "image_path": str(Path(image_path).resolve()),
        "mask_path": str(Path(mask_path).resolve()) if mask_path else "",
    }


def validate_manifest(df: pd.DataFrame, source: str = "manifest") -> pd.DataFrame:
    """Check columns, labels, splits and id uniqueness; return the frame in canonical column order and row order."""
    missing = [c for c in MANIFEST_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"{source}: missing columns {missing}")
    df = df[MANIFEST_COLUMNS].copy()
    df["mask_path"] = df["mask_path"].fillna("").astype(str)
    df["defect_type"] = df["defect_type"].fillna("good").astype(str)
    df["label"] = df["label"].astype(int)
    if df.empty:
        raise ValueError(f"{source}: no images found")
    bad_ids = df.loc[~df["image_id"].astype(str).str.match(IMAGE_ID_PATTERN), "image_id"]
    if len(bad_ids):
        raise ValueError(f"{source}: image ids with unsupported characters: {list(bad_ids[:5])}")
    dup = df.loc[df["image_id"].duplicated(), "image_id"]
    if len(dup):
        raise ValueError(f"{source}: duplicate image ids: {list(dup[:5])}")
    if not set(df["label"]).issubset({0, 1}):
        raise ValueError(f"{source}: labels must be 0 (normal) or 1 (anomalous)")
    if not set(df["split"]).issubset(SPLITS):
        raise ValueError(f"{source}: split must be one of {SPLITS}, got {sorted(set(df['split']))}")
    return df.sort_values(["category", "split", "label", "image_id"]).reset_index(drop=True)


def write_manifest(df: pd.DataFrame, path: str | Path) -> None:
    """Validate and atomically write a manifest CSV."""
    df = validate_manifest(df, str(path))
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)


def read_manifest(path: str | Path, category: str | None = None) -> pd.DataFrame:
    """Read and validate a manifest, optionally restricted to one category."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: manifest not found; run the prepare stage for this dataset first")
    df = pd.read_csv(path, dtype={"image_id": str, "category": str, "defect_type": str, "mask_path": str}, keep_default_na=False)
    df = validate_manifest(df, str(path))
    if category is not None:
        df = df[df["category"] == category].reset_index(drop=True)
        if df.empty:
            raise ValueError(f"{path}: no images of category {category!r}")
    return df
