"""Anomaly maps from patch-grid values to the evaluation resolution: square grids, bilinear upsampling, Gaussian
smoothing, and the float32 numpy arrays score steps return (also their score columns)."""

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


def upsample(maps: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear upsampling (``align_corners=False``) of ``(N, G, G)`` or ``(N, C, G, G)`` maps to side ``size``, in float32.

    The interpolation of anomalib's WinCLIP, PromptAD and AnomalyCLIP's ``get_similarity_map``.
    """
    if maps.dim() == 3:
        return upsample(maps.unsqueeze(1), size).squeeze(1)
    return F.interpolate(maps.float(), size=(size, size), mode="bilinear", align_corners=False)


def smooth(maps: np.ndarray, sigma: float) -> np.ndarray:
    """Each ``(N, S, S)`` map Gaussian-filtered with ``sigma`` pixels (``scipy.ndimage.gaussian_filter``); 0 leaves them."""
    if sigma <= 0 or not len(maps):
        return maps
    return ndimage.gaussian_filter(maps, sigma=(0, sigma, sigma))


def concat_numpy(parts: list[torch.Tensor]) -> np.ndarray:
    """Per-batch tensors joined along their first axis, as a float32 numpy array on the host."""
    return torch.cat(parts).float().cpu().numpy()
