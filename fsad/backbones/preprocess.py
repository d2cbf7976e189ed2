"""Image preprocessing shared by every backbone: RGB, a square resize to the input side, normalisation (torchvision).

Both libraries' backbones resize the whole image to ``image_size`` square (no crop, antialiased), because every
anomaly map is compared with its mask at a square evaluation size: WinCLIP's open_clip backbones bicubic with CLIP's
mean and std (as anomalib), timm backbones with the interpolation, mean and std of the weights' own pretrained
config (``wide_resnet50_2.tv_in1k``: bilinear, ImageNet's; DINOv2: bicubic, ImageNet's).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Callable

import torch
from torchvision.transforms import v2

INTERPOLATIONS = {"bicubic": v2.InterpolationMode.BICUBIC, "bilinear": v2.InterpolationMode.BILINEAR}


def square_preprocessing(
    image_size: int, mean: Sequence[float], std: Sequence[float], interpolation: str = "bicubic"
) -> Callable[[Any], torch.Tensor]:
    """PIL image (or ``(3, H, W)`` uint8 tensor) -> ``(3, S, S)`` float tensor: RGB, [0, 1], resized, normalised."""
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"interpolation {interpolation!r} is not one of {sorted(INTERPOLATIONS)}")
    return v2.Compose(
        [
            v2.Lambda(lambda img: img.convert("RGB") if hasattr(img, "convert") else img),
            v2.ToImage(),
            v2.ToDtype(torch.float32, scale=True),
            v2.Resize((image_size, image_size), interpolation=INTERPOLATIONS[interpolation], antialias=True),
            v2.Normalize(mean=list(mean), std=list(std)),
        ]
    )


def autocast_dtype(spec: dict[str, Any], device: torch.device) -> torch.dtype | None:
    """bf16 autocast on CUDA when the backbone entry asks for ``precision: bf16``; None (fp32) otherwise."""
    return torch.bfloat16 if spec.get("precision") == "bf16" and device.type == "cuda" else None
