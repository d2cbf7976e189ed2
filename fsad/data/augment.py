"""Joint image/mask augmentations for validating score weights on the training images.

The anomalous-samples paper augments its two training images (one anomalous, one normal) with rotation,
flipping, random distortion and skewing. Here, in this order and each with probability one half: a
rotation of up to ``ROTATION_DEGREES``, horizontal and vertical flips, an elastic distortion
(``ELASTIC_ALPHA``, ``ELASTIC_SIGMA``) and a perspective skew (``PERSPECTIVE_DISTORTION``), with the
parameters torchvision's ``RandomRotation``, ``ElasticTransform`` and ``RandomPerspective`` draw.

Fill: torchvision's geometric transforms fill the area they uncover with a constant (black corners),
which the memory scores would see as defects, and they offer no reflection mode. So each rotation,
distortion and skew is applied to the image reflect-padded by a margin wide enough for every output
pixel's source to lie inside it, then cropped back to the original size: uncovered areas show the
mirrored image instead of black. The mask goes through the same padding, transform and crop (mirrored
mask where the image is mirrored, nearest-neighbour resampling so it stays binary), so it marks the
defect wherever the image shows it, mirrored copies included.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from PIL import Image
from torch.nn import functional as F
from torchvision import transforms as v1
from torchvision import tv_tensors
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

ROTATION_DEGREES = 30.0
PERSPECTIVE_DISTORTION = 0.3
ELASTIC_ALPHA = 50.0
ELASTIC_SIGMA = 5.0
APPLY_PROBABILITY = 0.5
# At distortion 0.3 the source of an output pixel lies at most 0.46 of the side beyond the image
# (worst case over the extreme corner offsets RandomPerspective can draw); 0.5 of the side covers it.
PERSPECTIVE_REACH = 0.5

Pair = tuple[tv_tensors.Image, tv_tensors.Mask | None]


def _reflect_pad(tensor: torch.Tensor, pad_y: int, pad_x: int) -> torch.Tensor:
    """``(C, H, W)`` -> ``(C, H + 2 pad_y, W + 2 pad_x)`` by reflection (any margin, repeated reflections beyond one side)."""
    padded = np.pad(tensor.numpy(), ((0, 0), (pad_y, pad_y), (pad_x, pad_x)), mode="reflect")
    return tv_tensors.wrap(torch.from_numpy(padded), like=tensor)


def _on_reflected(pair: Pair, pad_y: int, pad_x: int, transform: Callable[[torch.Tensor], torch.Tensor]) -> Pair:
    """Apply ``transform`` to the reflect-padded image and mask, then crop both back to the ``(H, W)`` centre."""
    height, width = pair[0].shape[-2:]
    return tuple(  # type: ignore[return-value]
        None if t is None else TF.crop(transform(_reflect_pad(t, pad_y, pad_x)), pad_y, pad_x, height, width) for t in pair
    )


def _rotate(pair: Pair) -> Pair:
    angle = v1.RandomRotation.get_params([-ROTATION_DEGREES, ROTATION_DEGREES])
    height, width = pair[0].shape[-2:]
    pad = math.ceil(max(height, width) * math.sin(math.radians(ROTATION_DEGREES)) / 2) + 2
    return _on_reflected(pair, pad, pad, lambda t: TF.rotate(t, angle, interpolation=InterpolationMode.BILINEAR))


def rotate_reflected(image: torch.Tensor, degrees: float) -> torch.Tensor:
    """``(C, H, W)`` rotated by ``degrees`` (counter-clockwise) about its centre, bilinearly; the corners it uncovers
    show the mirrored image (``d c b | a b c d``, OpenCV's default border), not black.

    The image is reflect-padded just enough for the angle (the source of an output pixel lies at most
    ``max(H, W) / 2 |sin(angle)|`` beyond the image; capped one pixel short of the smaller side, which only very
    elongated images at steep angles exceed), rotated and cropped back. DreamBooth's augmentation and AnomalyDINO's
    rotated references use it.
    """
    height, width = image.shape[-2:]
    pad = min(math.ceil(max(height, width) / 2 * abs(math.sin(math.radians(degrees)))) + 2, min(height, width) - 1)
    padded = F.pad(image.unsqueeze(0), (pad, pad, pad, pad), mode="reflect").squeeze(0)
    rotated = TF.rotate(padded, degrees, interpolation=InterpolationMode.BILINEAR)
    return rotated[:, pad : pad + height, pad : pad + width]


def _flip(pair: Pair, flip: Callable[[torch.Tensor], torch.Tensor]) -> Pair:
    return tuple(None if t is None else flip(t) for t in pair)  # type: ignore[return-value]


def _elastic(pair: Pair) -> Pair:
    # A displacement field of amplitude alpha moves pixels by at most alpha / 2 (grid units span half the side).
    pad = math.ceil(ELASTIC_ALPHA / 2) + 2
    height, width = pair[0].shape[-2:]
    displacement = v1.ElasticTransform.get_params([ELASTIC_ALPHA] * 2, [ELASTIC_SIGMA] * 2, [height + 2 * pad, width + 2 * pad])
    return _on_reflected(pair, pad, pad, lambda t: TF.elastic(t, displacement))


def _perspective(pair: Pair) -> Pair:
    height, width = pair[0].shape[-2:]
    start, end = v1.RandomPerspective.get_params(width, height, PERSPECTIVE_DISTORTION)
    pad_y, pad_x = math.ceil(PERSPECTIVE_REACH * height) + 2, math.ceil(PERSPECTIVE_REACH * width) + 2
    # The corners drawn for the image, shifted into the padded frame: the same skew of the content.
    start, end = ([[x + pad_x, y + pad_y] for x, y in points] for points in (start, end))
    return _on_reflected(pair, pad_y, pad_x, lambda t: TF.perspective(t, start, end))


def _maybe(step: Callable[[Pair], Pair], pair: Pair) -> Pair:
    return step(pair) if torch.rand(1).item() < APPLY_PROBABILITY else pair


def random_augmentation(pair: Pair) -> Pair:
    """One random draw of rotation, flips, elastic distortion and perspective skew, jointly on ``(C, H, W)`` image and mask."""
    pair = _maybe(_rotate, pair)
    pair = _maybe(lambda p: _flip(p, TF.horizontal_flip), pair)
    pair = _maybe(lambda p: _flip(p, TF.vertical_flip), pair)
    pair = _maybe(_elastic, pair)
    return _maybe(_perspective, pair)


def augment(image: Image.Image, mask: Image.Image | None, n: int, seed: int) -> list[tuple[Image.Image, Image.Image | None]]:
    """``n`` augmented copies of ``image`` (and of ``mask`` by the same transform), reproducible from ``seed``.

    The global torch random state is left untouched.

    Returns:
        ``n`` pairs ``(image, mask)`` of the input size; RGB images, ``"L"`` masks (values 0/255), ``None``
        masks when ``mask`` is None.
    """
    if mask is not None and mask.size != image.size:
        raise ValueError(f"mask size {mask.size} differs from image size {image.size}")
    pixels = tv_tensors.Image(TF.pil_to_tensor(image.convert("RGB")))
    mask_tensor = None if mask is None else tv_tensors.Mask((TF.pil_to_tensor(mask.convert("L")) > 0).to(torch.uint8) * 255)
    out: list[tuple[Image.Image, Image.Image | None]] = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for _ in range(n):
            new_image, new_mask = random_augmentation((pixels, mask_tensor))
            out.append((TF.to_pil_image(new_image), None if new_mask is None else TF.to_pil_image(new_mask)))
    return out
