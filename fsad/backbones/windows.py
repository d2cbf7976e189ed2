"""Sliding windows over the ViT patch grid (stride one patch), as WinCLIP defines them."""

from __future__ import annotations

from functools import lru_cache

import torch


@lru_cache(maxsize=None)
def window_patch_indices(grid: int, window: int) -> torch.Tensor:
    """Indices of the patches each window covers.

    Windows slide with stride 1 over a ``grid x grid`` patch grid; both windows and the patches
    inside a window are in row-major order (the order of ``torch.nn.functional.unfold``, which
    anomalib's ``make_masks`` uses, so window ``i`` here is window ``i`` there).

    Returns:
        LongTensor ``(n_windows, window * window)`` with ``n_windows = (grid - window + 1) ** 2``.
    """
    if not 1 <= window <= grid:
        raise ValueError(f"window size {window} must lie in [1, {grid}] for a {grid}x{grid} patch grid")
    idx = torch.arange(grid * grid, dtype=torch.float32).reshape(1, 1, grid, grid)
    cols = torch.nn.functional.unfold(idx, kernel_size=window, stride=1)  # (1, window*window, n_windows)
    return cols[0].T.long().contiguous()


def window_coverage(grid: int, window: int, patch_mask: torch.Tensor) -> torch.Tensor:
    """Fraction of each window covered by a per-patch mask.

    Args:
        patch_mask: ``(grid * grid,)`` or ``(grid, grid)`` values in [0, 1] (e.g. the share of anomalous
            pixels in each patch).

    Returns:
        ``(n_windows,)`` mean of ``patch_mask`` over each window's patches.
    """
    flat = patch_mask.reshape(-1).float()
    return flat[window_patch_indices(grid, window)].mean(dim=1)
