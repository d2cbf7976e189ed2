"""Nearest neighbours of patch features in a memory bank, chunked so that no (queries, memory) matrix outgrows memory.

Pure torch. PatchCore compares by Euclidean distance, AnomalyDINO by cosine distance; both search exhaustively
(what faiss' flat indexes do in the public codes), a block of queries at a time.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

# Entries of one (queries, memory) distance block: 2^26 float32 values are 256 MB.
BLOCK_ENTRIES = 1 << 26
METRICS = ("euclidean", "cosine")


def pairwise_distances(queries: torch.Tensor, memory: torch.Tensor, metric: str = "euclidean") -> torch.Tensor:
    """``(..., Q, C)`` x ``(..., M, C)`` -> ``(..., Q, M)``.

    ``euclidean``: ``sqrt(max(|q|^2 - 2 q.m + |m|^2, 0))`` (the matrix-product form anomalib uses, not ``cdist``);
    ``cosine``: ``1 - cos(q, m)``.
    """
    if metric == "cosine":
        return 1 - F.normalize(queries, dim=-1) @ F.normalize(memory, dim=-1).transpose(-2, -1)
    if metric != "euclidean":
        raise ValueError(f"metric {metric!r} is not one of {METRICS}")
    squared = queries.pow(2).sum(-1, keepdim=True) - 2 * queries @ memory.transpose(-2, -1) + memory.pow(2).sum(-1).unsqueeze(-2)
    return squared.clamp_min(0).sqrt()


def nearest(queries: torch.Tensor, memory: torch.Tensor, k: int = 1, metric: str = "euclidean") -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` memory entries nearest each query, nearest first.

    Args:
        queries: ``(Q, C)``; memory: ``(M, C)``, ``M >= k``.

    Returns:
        ``(Q, k)`` distances and ``(Q, k)`` memory indices.
    """
    if k > len(memory):
        raise ValueError(f"{k} nearest neighbours asked of a memory of {len(memory)} entries")
    block = max(1, BLOCK_ENTRIES // max(len(memory), 1))
    values, indices = [], []
    for start in range(0, len(queries), block):
        distances = pairwise_distances(queries[start : start + block], memory, metric)
        if k == 1:
            value, index = distances.min(dim=1, keepdim=True)
        else:
            value, index = distances.topk(k, dim=1, largest=False)
        values.append(value)
        indices.append(index)
    if not values:
        return queries.new_zeros((0, k)), torch.zeros((0, k), dtype=torch.long, device=queries.device)
    return torch.cat(values), torch.cat(indices)
