"""Joint image/mask augmentations for validating score weights on the training images.

The anomalous-samples paper augments its two training images (one anomalous, one normal) with rotation,
flipping, random distortion and skewing. Here: ``torchvision.transforms.v2`` ``RandomRotation``,
horizontal and vertical flips, ``ElasticTransform`` (random distortion) and ``RandomPerspective``
(skew), each applied with probability one half, jointly to the image and its mask (the mask is a
``tv_tensors.Mask`` so it is resampled with nearest neighbours and stays binary).
"""

from __future__ import annotations

import torch
from PIL import Image
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

ROTATION_DEGREES = 30.0
PERSPECTIVE_DISTORTION = 0.3
ELASTIC_ALPHA = 50.0


def augmentation_pipeline() -> v2.Compose:
    """Rotation, flips, random (elastic) distortion and perspective skew, each with probability 0.5."""
    return v2.Compose(
        [
            v2.RandomApply([v2.RandomRotation(ROTATION_DEGREES)], p=0.5),
            v2.RandomHorizontalFlip(p=0.5),
            v2.RandomVerticalFlip(p=0.5),
            v2.RandomApply([v2.ElasticTransform(alpha=ELASTIC_ALPHA)], p=0.5),
            v2.RandomPerspective(distortion_scale=PERSPECTIVE_DISTORTION, p=0.5),
        ]
    )


def augment(image: Image.Image, mask: Image.Image | None, n: int, seed: int) -> list[tuple[Image.Image, Image.Image | None]]:
    """``n`` augmented copies of ``image`` (and of ``mask`` by the same transform), reproducible from ``seed``.

    The global torch random state is left untouched.

    Returns:
        ``n`` pairs ``(image, mask)``; RGB images, ``"L"`` masks (values 0/255), ``None`` masks when
        ``mask`` is None.
    """
    if mask is not None and mask.size != image.size:
        raise ValueError(f"mask size {mask.size} differs from image size {image.size}")
    pixels = tv_tensors.Image(TF.pil_to_tensor(image.convert("RGB")))
    mask_tensor = None if mask is None else tv_tensors.Mask(TF.pil_to_tensor(mask.convert("L")) > 0).to(torch.uint8) * 255
    pipeline = augmentation_pipeline()
    out: list[tuple[Image.Image, Image.Image | None]] = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for _ in range(n):
            if mask_tensor is None:
                new_image, new_mask = pipeline(pixels), None
            else:
                new_image, new_mask = pipeline(pixels, tv_tensors.Mask(mask_tensor))
            out.append((TF.to_pil_image(new_image), None if new_mask is None else TF.to_pil_image(new_mask)))
    return out
