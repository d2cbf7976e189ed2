"""Anomaly maps from patch-grid values to the evaluation resolution: square grids, bilinear or nearest upsampling,
Gaussian smoothing (scipy's on host arrays, or in torch with a chosen border), and the float32 numpy arrays score steps
return (also their score columns).

The torch Gaussian (:func:`gaussian_blur`, PatchCore and AnomalyDINO) has a radius of ``int(4 sigma + 0.5)`` (kernel 33
at sigma 4), as anomalib's ``GaussianBlur2d`` and ``scipy.ndimage.gaussian_filter`` (truncate 4) have, and is applied
separably. Borders are reflected as one of the two references does: ``mirror`` about the edge pixel (``d c b | a b c d``,
torch's ``reflect``: anomalib's blur) or ``symmetric`` with the edge pixel repeated (``c b a | a b c``, scipy's
``reflect``: the AnomalyDINO and PatchCore codes). Maps smaller than the radius reflect again, as scipy does.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage
from torch.nn import functional as F


def square_grid(patch_values: torch.Tensor) -> torch.Tensor:
    """``(N, P, C)`` values of the patches, row-major on a square grid -> ``(N, C, G, G)`` with ``G * G = P``."""
    batch, patches, channels = patch_values.shape
    grid = int(round(patches**0.5))
    if grid * grid != patches:
        raise ValueError(f"{patches} patch tokens do not form a square grid")
    return patch_values.transpose(1, 2).reshape(batch, channels, grid, grid)


def upsample(maps: torch.Tensor, size: int, mode: str = "bilinear") -> torch.Tensor:
    """Upsampling of ``(N, G, G)`` or ``(N, C, G, G)`` maps to side ``size``, in float32: ``bilinear``
    (``align_corners=False``: anomalib's WinCLIP and PatchCore, PromptAD, AnomalyCLIP's ``get_similarity_map``) or
    ``nearest`` (PatchCore's patch scores before smoothing).
    """
    if maps.dim() == 3:
        return upsample(maps.unsqueeze(1), size, mode).squeeze(1)
    corners = {"align_corners": False} if mode == "bilinear" else {}
    return F.interpolate(maps.float(), size=(size, size), mode=mode, **corners)


def smooth(maps: np.ndarray, sigma: float) -> np.ndarray:
    """Each ``(N, S, S)`` map Gaussian-filtered with ``sigma`` pixels (``scipy.ndimage.gaussian_filter``); 0 leaves them."""
    if sigma <= 0 or not len(maps):
        return maps
    return ndimage.gaussian_filter(maps, sigma=(0, sigma, sigma))


BORDERS = ("mirror", "symmetric")


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


def concat_numpy(parts: list[torch.Tensor]) -> np.ndarray:
    """Per-batch tensors joined along their first axis, as a float32 numpy array on the host."""
    return torch.cat(parts).float().cpu().numpy()
