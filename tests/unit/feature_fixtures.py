"""Random WinCLIP features for scorer tests."""

import torch

from fsad.features.types import FeatureBatch


def random_features(n: int, grid: int = 5, width: int = 8, dim: int = 6, window_sizes=(2, 3), seed: int = 0) -> FeatureBatch:
    """``n`` images ``img0..`` with random image embeddings, patch tokens and window embeddings."""
    gen = torch.Generator().manual_seed(seed)
    return FeatureBatch(
        [f"img{i}" for i in range(n)],
        torch.randn(n, dim, generator=gen),
        torch.randn(n, grid * grid, width, generator=gen),
        {k: torch.randn(n, (grid - k + 1) ** 2, dim, generator=gen) for k in window_sizes},
        grid,
    )
