"""Procedural defects with exact pixel masks, pasted onto normal images (numpy, PIL, scipy.ndimage).

Four defect types, each drawn at a log-uniform size between :data:`MIN_SIZE` and :data:`MAX_SIZE`
of the image side so that some defects cover a few pixels and others a large part of the image:

* ``scratch``: a thin quadratic Bezier stroke, lighter or darker than the surface;
* ``spot``: a blob with an irregular outline and a soft edge that darkens or lightens and tints;
* ``cutpaste``: a patch cut from ANOTHER image, rotated and colour-jittered (CutPaste, Li et al. 2021);
* ``noise``: smoothed multi-octave noise blended inside an irregular region.

Every function takes and returns ``uint8`` arrays of shape ``(H, W, 3)``. The mask of a defect is
exactly the set of pixels whose value changed (:func:`changed_pixels`), computed after rounding to
``uint8``, so it matches the written image bit for bit. All randomness comes from the
``numpy.random.Generator`` passed in.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

from fsad.io import atomic_path

DEFECT_TYPES = ("scratch", "spot", "cutpaste", "noise")
MIN_SIZE = 0.03  # smallest defect extent, as a fraction of the image side
MAX_SIZE = 0.45  # largest defect extent
MIN_ALPHA = 0.2  # blend weights below this are dropped so soft fringes do not add invisible mask pixels
_MAX_ATTEMPTS = 10


@dataclass(frozen=True)
class Defect:
    """One defective image: ``image`` (H, W, 3) uint8 and ``mask`` (H, W) bool of the changed pixels."""

    image: np.ndarray
    mask: np.ndarray
    defect_type: str


def load_rgb(path: str | Path, image_size: int) -> np.ndarray:
    """Read an image as RGB resized to ``image_size`` x ``image_size``; returns (S, S, 3) uint8."""
    try:
        with Image.open(path) as image:
            rgb = image.convert("RGB").resize((image_size, image_size), Image.Resampling.BICUBIC)
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: cannot read the image ({err}); check the source dataset's files") from err
    return np.asarray(rgb, dtype=np.uint8)


def save_png(array: np.ndarray, path: str | Path) -> None:
    """Write a (H, W, 3) uint8 image or a (H, W) bool mask (as 0/255) to PNG atomically; same array, same bytes."""
    if array.dtype == bool:
        array = array.astype(np.uint8) * 255
    with atomic_path(path) as tmp:
        Image.fromarray(array).save(tmp, format="PNG")


def changed_pixels(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """(H, W) bool: pixels where any channel of ``after`` differs from ``before`` (both (H, W, 3))."""
    return np.any(before != after, axis=-1)


def defect_size(rng: np.random.Generator, image_size: int) -> float:
    """A defect extent in pixels, log-uniform in [MIN_SIZE, MAX_SIZE] x image side."""
    return float(np.exp(rng.uniform(np.log(MIN_SIZE), np.log(MAX_SIZE)))) * image_size


def blend(image: np.ndarray, overlay: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """``alpha * overlay + (1 - alpha) * image`` rounded to uint8; (H, W, 3) images, (H, W) alpha in [0, 1]."""
    alpha = np.where(alpha < MIN_ALPHA, 0.0, alpha)[..., None]
    mixed = alpha * overlay.astype(np.float64) + (1.0 - alpha) * image.astype(np.float64)
    return np.clip(np.rint(mixed), 0, 255).astype(np.uint8)


def _contrast_shift(rng: np.random.Generator, reference: float, low: float, high: float) -> float:
    """A signed intensity shift of magnitude in [low, high], pointing away from saturation at ``reference``."""
    magnitude = rng.uniform(low, high)
    darker = reference > 128 if rng.random() < 0.8 else reference <= 128
    return -magnitude if darker else magnitude


def scratch(image: np.ndarray, rng: np.random.Generator, donor: np.ndarray | None = None) -> np.ndarray:
    """A thin curved stroke (quadratic Bezier) of one colour, anti-aliased; (H, W, 3) -> (H, W, 3)."""
    height, width = image.shape[:2]
    length = 2.0 * defect_size(rng, min(height, width))
    start = rng.uniform([0, 0], [width, height])
    angle = rng.uniform(0, 2 * np.pi)
    end = start + length * np.array([np.cos(angle), np.sin(angle)])
    bend = rng.normal(0, 0.25) * length * np.array([-np.sin(angle), np.cos(angle)])
    control = (start + end) / 2 + bend
    t = np.linspace(0, 1, max(int(length), 2))[:, None]
    points = (1 - t) ** 2 * start + 2 * (1 - t) * t * control + t**2 * end
    canvas = Image.new("L", (width, height), 0)
    stroke_width = int(rng.integers(2, 4 + int(length > 0.3 * width)))
    ImageDraw.Draw(canvas).line([tuple(p) for p in points], fill=255, width=stroke_width, joint="curve")
    alpha = ndimage.gaussian_filter(np.asarray(canvas, dtype=np.float64) / 255.0, 0.6)
    alpha = np.clip(alpha * 1.5, 0, 1)
    region = alpha > MIN_ALPHA
    local_mean = float(image[region].mean()) if region.any() else float(image.mean())
    colour = np.clip(local_mean + _contrast_shift(rng, local_mean, 70, 140), 0, 255)
    return blend(image, np.full_like(image, colour, dtype=np.float64), alpha)


def _irregular_blob(rng: np.random.Generator, shape: tuple[int, int], radius: float, softness: float) -> np.ndarray:
    """(H, W) alpha of a blob with a wavy outline around a random centre; ``softness`` is the edge width in pixels."""
    height, width = shape
    centre = rng.uniform([0, 0], [height, width])
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    dy, dx = yy - centre[0], xx - centre[1]
    rotation = rng.uniform(0, np.pi)
    aspect = rng.uniform(0.5, 1.0)
    u = dx * np.cos(rotation) + dy * np.sin(rotation)
    v = (-dx * np.sin(rotation) + dy * np.cos(rotation)) / aspect
    theta = np.arctan2(v, u)
    outline = np.ones_like(theta)
    for harmonic in range(2, 6):
        outline += rng.normal(0, 0.25 / harmonic) * np.cos(harmonic * theta + rng.uniform(0, 2 * np.pi))
    distance = np.hypot(u, v) - radius * np.clip(outline, 0.4, 1.6)
    return np.clip(0.5 - distance / max(softness, 1e-6), 0, 1)


def spot(image: np.ndarray, rng: np.random.Generator, donor: np.ndarray | None = None) -> np.ndarray:
    """A stain: an irregular soft-edged blob that darkens or lightens the surface with a slight tint."""
    size = defect_size(rng, min(image.shape[:2]))
    alpha = _irregular_blob(rng, image.shape[:2], radius=max(size / 2, 2.0), softness=max(size / 8, 1.0))
    mean = float(image.mean())
    shift = _contrast_shift(rng, mean, 50, 110)
    tint = rng.normal(0, 8, size=3)
    overlay = image.astype(np.float64) * rng.uniform(0.7, 1.0) + shift + tint
    return blend(image, np.clip(overlay, 0, 255), alpha)


def cutpaste(image: np.ndarray, rng: np.random.Generator, donor: np.ndarray | None = None) -> np.ndarray:
    """Paste a rotated, colour-jittered rectangle cut from ``donor`` (another (H, W, 3) image) at a random place."""
    if donor is None:
        raise ValueError("cutpaste needs a donor image other than the one it pastes into")
    height, width = image.shape[:2]
    size = max(defect_size(rng, min(height, width)), 4.0)
    aspect = np.exp(rng.uniform(np.log(0.3), np.log(3.0)))
    patch_h = int(np.clip(size * np.sqrt(aspect), 3, height - 1))
    patch_w = int(np.clip(size / np.sqrt(aspect), 3, width - 1))
    top, left = rng.integers(0, height - patch_h + 1), rng.integers(0, width - patch_w + 1)
    patch = donor[top : top + patch_h, left : left + patch_w].astype(np.float64)
    patch = (patch - patch.mean()) * rng.uniform(0.6, 1.6) + patch.mean() + rng.uniform(-60, 60)
    patch = Image.fromarray(np.clip(np.rint(patch), 0, 255).astype(np.uint8)).convert("RGBA")
    # The surface texture has a direction; a quarter turn plus a tilt makes the pasted weave run across it.
    # Nearest-neighbour rotation keeps the border exact (no blend with the transparent fill).
    angle = 90.0 * rng.integers(1, 4) + rng.uniform(-30, 30)
    rotated_rgba = np.asarray(patch.rotate(angle, resample=Image.Resampling.NEAREST, expand=True))
    rotated, coverage = rotated_rgba[..., :3], rotated_rgba[..., 3] > 0
    rot_h, rot_w = coverage.shape
    rot_h, rot_w = min(rot_h, height), min(rot_w, width)
    rotated, coverage = rotated[:rot_h, :rot_w], coverage[:rot_h, :rot_w]
    y, x = rng.integers(0, height - rot_h + 1), rng.integers(0, width - rot_w + 1)
    result = image.copy()
    target = result[y : y + rot_h, x : x + rot_w]
    target[coverage] = rotated[coverage]
    return result


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], cell: float, octaves: int = 3) -> np.ndarray:
    """(H, W) value noise in about [-1, 1]: cubic upsampling of random grids, summed over octaves (Perlin-like)."""
    height, width = shape
    total = np.zeros(shape)
    for octave in range(octaves):
        step = max(cell / 2**octave, 2.0)
        grid = rng.uniform(-1, 1, size=(int(np.ceil(height / step)) + 3, int(np.ceil(width / step)) + 3))
        upsampled = ndimage.zoom(grid, step, order=3, mode="nearest")
        total += upsampled[:height, :width] / 2**octave
    return total / total.std().clip(1e-6)


def noise(image: np.ndarray, rng: np.random.Generator, donor: np.ndarray | None = None) -> np.ndarray:
    """Smoothed noise added inside an irregular soft region (a blob whose outline is noise-distorted)."""
    shape = image.shape[:2]
    size = max(defect_size(rng, min(shape)), 6.0)
    blob = _irregular_blob(rng, shape, radius=size / 2, softness=max(size / 6, 1.0))
    ragged = _smooth_noise(rng, shape, cell=max(size / 3, 3.0), octaves=2)
    alpha = np.clip(blob * (1.2 + 0.6 * ragged), 0, 1)
    texture = _smooth_noise(rng, shape, cell=rng.uniform(3.0, 10.0))
    amplitude = rng.uniform(40, 90)
    overlay = image.astype(np.float64) + amplitude * texture[..., None]
    return blend(image, np.clip(overlay, 0, 255), alpha)


DEFECT_MAKERS: dict[str, Callable[[np.ndarray, np.random.Generator, np.ndarray | None], np.ndarray]] = {
    "scratch": scratch,
    "spot": spot,
    "cutpaste": cutpaste,
    "noise": noise,
}


def add_defect(image: np.ndarray, defect_type: str, rng: np.random.Generator, donor: np.ndarray | None = None) -> Defect:
    """Paste one defect of ``defect_type`` onto ``image`` (H, W, 3) uint8; the mask is exactly the changed pixels.

    Draws again (same generator, so still deterministic) in the rare case a draw changes no pixel.
    """
    if defect_type not in DEFECT_MAKERS:
        raise ValueError(f"unknown defect type {defect_type!r}; known: {list(DEFECT_MAKERS)}")
    for _ in range(_MAX_ATTEMPTS):
        defective = DEFECT_MAKERS[defect_type](image, rng, donor)
        mask = changed_pixels(image, defective)
        if mask.any():
            return Defect(defective, mask, defect_type)
    raise RuntimeError(f"{defect_type}: {_MAX_ATTEMPTS} draws changed no pixel; is the source image blank?")
