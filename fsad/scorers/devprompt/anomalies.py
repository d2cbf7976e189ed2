"""Anomalous training images made from the normal shots with the data stage's defect generator (numpy).

DevPrompt trains on one normal image, so the hinge term of its deviation loss (``y = 1``) has no real anomaly
to push up; these synthetic defects (:mod:`fsad.data.synthetic_defects`) pasted onto the normal shots stand in.
Each is made at the shot's own resolution, so it reaches the backbone through the same preprocessing as the
cached normal shot and differs from it only where the defect is.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from fsad.data.synthetic_defects import Defect, add_defect

MAX_DRAWS = 100  # draws per anomalous example before min_patches is given up on


def _same_size(donor: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    if donor.shape == shape:
        return donor
    return np.asarray(Image.fromarray(donor).resize((shape[1], shape[0]), Image.Resampling.BICUBIC))


def touched_cells(mask: np.ndarray, grid: int) -> int:
    """Cells of a ``grid`` x ``grid`` patch grid laid over the ``(H, W)`` bool ``mask`` that hold a defect pixel."""
    rows, cols = np.nonzero(mask)
    cells = (rows * grid // mask.shape[0]) * grid + cols * grid // mask.shape[1]
    return len(np.unique(cells))


def synthetic_anomalies(
    shots: list[np.ndarray], count: int, defect_types: list[str], rng: np.random.Generator, grid: int, min_patches: int = 1
) -> list[Defect]:
    """``count`` defective copies of the ``(H, W, 3)`` uint8 normal ``shots``, shots and defect types taking turns.

    A draw whose defect touches fewer than ``min_patches`` cells of the backbone's ``grid`` x ``grid`` patch grid
    is drawn again (same generator, so still deterministic): a defect inside one patch barely moves the mean of
    the Top-K patch deviations, so such an example teaches the hinge term little but noise. CutPaste cuts its patch
    from the next shot (resized to this one), or from the shot itself when there is one, as the CutPaste paper does.
    """
    if not shots:
        raise ValueError("synthetic anomalies need at least one normal shot")
    defects = []
    for i in range(count):
        base = shots[i % len(shots)]
        donor = _same_size(shots[(i + 1) % len(shots)], base.shape)
        defect_type = defect_types[i % len(defect_types)]
        for _ in range(MAX_DRAWS):
            defect = add_defect(base, defect_type, rng, donor)
            if touched_cells(defect.mask, grid) >= min_patches:
                break
        else:
            raise ValueError(f"{MAX_DRAWS} {defect_type} defects all touched fewer than min_defect_patches {min_patches} patches; lower it")
        defects.append(defect)
    return defects
