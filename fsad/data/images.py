"""Reading dataset images and ground-truth masks, with errors that name the file and the fix."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

log = logging.getLogger(__name__)


def read_image(path: str | Path) -> Image.Image:
    """Open an image fully (so a truncated file fails here), naming the file when it cannot be read."""
    try:
        with Image.open(path) as img:
            img.load()
            return img.convert("RGB")
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: image not found; rerun prepare_dataset for its dataset") from None
    except (UnidentifiedImageError, OSError) as err:
        raise ValueError(f"{path}: corrupt or unreadable image ({err}); replace the file or remove it from the dataset") from err


def load_masks(mask_paths: Sequence[str], labels: Sequence[int], size: int) -> np.ndarray | None:
    """Ground-truth masks at evaluation resolution, ``(N, size, size)`` bool (nearest-neighbour resize, pixel > 0).

    A normal image without a mask path gets an empty mask. When any anomalous image has no mask (a dataset
    with image-level labels only), pixel metrics are undefined for the whole set: returns ``None``.
    """
    paths = ["" if path is None or (isinstance(path, float) and np.isnan(path)) else str(path) for path in mask_paths]
    labels = [int(label) for label in labels]
    if len(paths) != len(labels):
        raise ValueError(f"{len(paths)} mask paths but {len(labels)} labels")
    unmasked = sum(1 for path, label in zip(paths, labels) if label == 1 and not path)
    if unmasked:
        log.info("%d anomalous image(s) have no mask; pixel metrics are skipped for this set", unmasked)
        return None
    masks = np.zeros((len(paths), size, size), dtype=bool)
    for index, path in enumerate(paths):
        if not path:
            continue
        if not Path(path).is_file():
            raise FileNotFoundError(f"{path}: mask file listed in the manifest is missing; rerun the dataset's prepare step")
        with Image.open(path) as mask:
            masks[index] = np.asarray(mask.convert("L").resize((size, size), Image.Resampling.NEAREST)) > 0
    return masks
