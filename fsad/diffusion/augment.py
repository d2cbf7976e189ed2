"""DreamBooth's augmentation of the normal references (paper section 3.2: flips, small rotations, crops), pure torch."""

from __future__ import annotations

from typing import Any

import torch
from torchvision.transforms.v2 import functional as TF

from fsad.data.augment import rotate_reflected


def _uniform(low: float, high: float, generator: torch.Generator) -> float:
    return low + (high - low) * torch.rand((), generator=generator).item()


def _random_crop(image: torch.Tensor, min_scale: float, generator: torch.Generator) -> torch.Tensor:
    """A random square crop of side ``[min_scale, 1]`` times the image's, resized back to ``(3, S, S)``."""
    side = image.shape[-1]
    crop = max(1, round(side * _uniform(min_scale, 1.0, generator)))
    top = int(torch.randint(0, side - crop + 1, (), generator=generator))
    left = int(torch.randint(0, side - crop + 1, (), generator=generator))
    patch = image[:, top : top + crop, left : left + crop]
    return TF.resize(patch, [side, side], interpolation=TF.InterpolationMode.BILINEAR, antialias=True)


def augment_references(images: torch.Tensor, params: dict[str, Any], generator: torch.Generator) -> torch.Tensor:
    """One random augmentation of each image.

    Args:
        images: ``(N, 3, S, S)`` float images (any range; DreamBooth's are in [-1, 1]).
        params: ``hflip``, ``vflip`` (booleans, each flip with probability 1/2), ``rotation_degrees`` (uniform in
            ``[-d, d]``), ``crop_scale`` (smallest crop side as a fraction of the image's).
        generator: the source of every random draw (the training loop's, so runs repeat exactly).

    Returns:
        ``(N, 3, S, S)``.
    """
    out = []
    for image in images:
        if params["hflip"] and torch.rand((), generator=generator).item() < 0.5:
            image = image.flip(-1)
        if params["vflip"] and torch.rand((), generator=generator).item() < 0.5:
            image = image.flip(-2)
        if params["rotation_degrees"] > 0:
            image = rotate_reflected(image, _uniform(-params["rotation_degrees"], params["rotation_degrees"], generator))
        if params["crop_scale"] < 1:
            image = _random_crop(image, params["crop_scale"], generator)
        out.append(image)
    return torch.stack(out)
