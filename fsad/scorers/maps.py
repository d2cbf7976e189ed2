"""Anomaly-map post-processing of the memory-bank methods (PatchCore, AnomalyDINO): upsampling and Gaussian smoothing.

Pure torch, ``(N, S, S)`` maps. The Gaussian has a radius of ``int(4 sigma + 0.5)`` (kernel 33 at sigma 4), as
anomalib's ``GaussianBlur2d`` and ``scipy.ndimage.gaussian_filter`` (truncate 4) have, and is applied separably.
Borders are reflected as one of the two references does: ``mirror`` about the edge pixel (``d c b | a b c d``, torch's
``reflect``: anomalib's blur) or ``symmetric`` with the edge pixel repeated (``c b a | a b c``, scipy's ``reflect``: the
AnomalyDINO and PatchCore codes). Maps smaller than the radius reflect again, as scipy does.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

BORDERS = ("mirror", "symmetric")


def upsample(maps: torch.Tensor, size: int, mode: str = "bilinear") -> torch.Tensor:
    """``(N, G, G)`` -> ``(N, size, size)`` by ``nearest`` or ``bilinear`` (``align_corners=False``) interpolation."""
    corners = {"align_corners": False} if mode == "bilinear" else {}
    return F.interpolate(maps.unsqueeze(1), size=(size, size), mode=mode, **corners).squeeze(1)


def gaussian_kernel(sigma: float) -> torch.Tensor:
    """``(2 r + 1,)`` normalised Gaussian weights, ``r = int(4 sigma + 0.5)``."""
    radius = int(4.0 * sigma + 0.5)
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float64)
    weights = torch.exp(-(offsets**2) / (2 * sigma**2))
    return (weights / weights.sum()).float()


def reflected_index(length: int, radius: int, border: str) -> torch.Tensor:
    """Source index of each of ``length + 2 radius`` padded positions, reflecting at both ends (any ``radius``)."""
    if border not in BORDERS:
        raise ValueError(f"border {border!r} is not one of {BORDERS}")
    positions = torch.arange(-radius, length + radius)
    if length == 1:
        return torch.zeros_like(positions)
    period = 2 * (length - 1) if border == "mirror" else 2 * length
    folded = positions % period
    return torch.where(folded < length, folded, period - folded - (0 if border == "mirror" else 1))


def gaussian_blur(maps: torch.Tensor, sigma: float, border: str = "mirror") -> torch.Tensor:
    """``(N, H, W)`` maps smoothed by a Gaussian of ``sigma`` pixels (0 leaves them), borders reflected by ``border``."""
    if sigma <= 0:
        return maps
    kernel = gaussian_kernel(sigma).to(maps.device, maps.dtype)
    radius = (len(kernel) - 1) // 2
    _, height, width = maps.shape
    rows, cols = reflected_index(height, radius, border).to(maps.device), reflected_index(width, radius, border).to(maps.device)
    padded = maps[:, rows][:, :, cols].unsqueeze(1)
    smoothed = F.conv2d(padded, kernel.view(1, 1, -1, 1))
    return F.conv2d(smoothed, kernel.view(1, 1, 1, -1)).squeeze(1)
