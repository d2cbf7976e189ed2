"""The directories of generated images (class images, pools, personalized test images): PNGs plus ``index.csv``.

Light on imports on purpose: score jobs read pool and personalized indexes without loading any diffusion code.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from PIL import Image

from fsad.io import atomic_directory

INDEX = "index.csv"
# Feature-store id of a test image's personalization under the fixed prompt: f"{image_id}{FIXED_SUFFIX}".
FIXED_SUFFIX = "#fixed"
REFERENCE, TEXT_TO_IMAGE, IMAGE_TO_IMAGE = "reference", "text_to_image", "image_to_image"


def write_image_set(target: str | Path, index: pd.DataFrame, images: dict[str, Image.Image]) -> None:
    """PNG ``images`` (file name -> image) and ``index`` as ``index.csv``, into directory ``target`` atomically."""
    with atomic_directory(target) as tmp:
        for name, image in images.items():
            image.save(tmp / name, format="PNG")
        index.to_csv(tmp / INDEX, index=False)


def read_image_set(directory: str | Path) -> pd.DataFrame:
    """The ``index.csv`` of an image directory, its ``file`` and ``*_file`` columns made absolute paths ('' stays '')."""
    directory = Path(directory)
    path = directory / INDEX
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no index; rerun the job that writes {directory}")
    index = pd.read_csv(path, keep_default_na=False, dtype={"image_id": str, "source": str})
    for column in [c for c in index.columns if c == "file" or c.endswith("_file")]:
        index[column] = [str(directory / name) if name else "" for name in index[column]]
    return index


def generated_image_paths(directory: str | Path) -> dict[str, str]:
    """Feature-store id -> PNG path of every image a pool or personalized directory holds (references excluded)."""
    index = read_image_set(directory)
    paths = {row.image_id: row.file for row in index.itertuples() if row.file}
    if "fixed_file" in index.columns:
        paths |= {f"{row.image_id}{FIXED_SUFFIX}": row.fixed_file for row in index.itertuples() if row.fixed_file}
    return paths


def pool_generated_ids(index: pd.DataFrame) -> list[str]:
    """Ids of a pool's generated images, in memory order (the references come first in the index and are left out)."""
    return list(index.loc[index["kind"] != REFERENCE, "image_id"])
