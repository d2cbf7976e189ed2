"""PatchCore (Roth et al., CVPR 2022) as pure tensor maths, numbers as anomalib's ``PatchcoreModel`` (anomalib 2.x).

Shapes: ``N`` images, feature maps ``(N, C_l, h_l, w_l)`` of the chosen CNN stages (the first the finest), ``P = h w``
patches on the first stage's grid, ``D`` embedding width, ``M`` memory-bank entries.

- Locally aware patch features (``anomalib``): each stage 3x3 average-pooled (stride 1, zero padding counted), the
  coarser ones upsampled bilinearly (``align_corners=False``) to the first grid, concatenated: 512 + 1024 = 1536-d for
  ``wide_resnet50_2`` layer2 + layer3. ``original`` (amazon-science/patchcore-inspection): each stage's 3x3
  neighbourhoods unfolded (zero padding), upsampled the same way, projected to 1024-d by adaptive average pooling per
  stage, then the stages' vectors pooled together to 1024-d.
- Memory bank: the references' patches, optionally a greedy k-center coreset of them (:func:`greedy_coreset`).
- Patch score: Euclidean distance to the nearest bank entry. Image score: the paper's reweighting (anomalib):
  ``(1 - softmax(d)[0]) s*`` with ``s*`` the worst patch's distance and ``d`` its distances to the ``k`` bank
  entries nearest its own nearest entry ``m*`` (``m*`` first); or the plain maximum (the original code).
- Map: patch scores upsampled (nearest) to the input size, then a Gaussian of sigma 4 px (kernel 33, mirrored
  borders), as anomalib's ``AnomalyMapGenerator``.
"""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F

from fsad.features.types import FeatureBatch
from fsad.maps import gaussian_blur, upsample
from fsad.scorers.nearest import nearest, pairwise_distances

EMBEDDINGS = ("anomalib", "original")
ORIGINAL_DIM = 1024
# Johnson-Lindenstrauss distortion of the coreset's random projection (anomalib's SparseRandomProjection(eps=0.9)).
PROJECTION_EPS = 0.9


def feature_maps(features: FeatureBatch, layers: list[int]) -> list[torch.Tensor]:
    """``(N, C, h, h)`` feature map of each stage in ``layers``, from the store's ``(N, h * h, C)`` rows."""
    maps = []
    for layer in layers:
        rows = features.layers[layer].float()
        side = math.isqrt(rows.shape[1])
        if side * side != rows.shape[1]:
            raise ValueError(f"layer {layer} holds {rows.shape[1]} positions, not a square grid")
        maps.append(rows.transpose(1, 2).reshape(len(rows), -1, side, side))
    return maps


def anomalib_embedding(maps: list[torch.Tensor]) -> torch.Tensor:
    """anomalib's locally aware features: ``(N, sum C_l, h_0, w_0)``."""
    pooled = [F.avg_pool2d(m, kernel_size=3, stride=1, padding=1) for m in maps]
    size = pooled[0].shape[-2:]
    return torch.cat([pooled[0], *(F.interpolate(m, size=size, mode="bilinear", align_corners=False) for m in pooled[1:])], dim=1)


def original_embedding(maps: list[torch.Tensor], dim: int = ORIGINAL_DIM) -> torch.Tensor:
    """patchcore-inspection's features: 3x3 neighbourhoods, per-stage and joint adaptive pooling: ``(N, dim, h_0, w_0)``."""
    height, width = maps[0].shape[-2:]
    per_stage = []
    for m in maps:
        n, channels, h, w = m.shape
        neighbourhoods = F.unfold(m, kernel_size=3, padding=1).reshape(n, channels * 9, h, w)  # (C, 3, 3) per position
        if (h, w) != (height, width):
            neighbourhoods = F.interpolate(neighbourhoods, size=(height, width), mode="bilinear", align_corners=False)
        rows = neighbourhoods.permute(0, 2, 3, 1).reshape(n * height * width, 1, channels * 9)
        per_stage.append(F.adaptive_avg_pool1d(rows, dim))
    joint = F.adaptive_avg_pool1d(torch.cat(per_stage, dim=1).reshape(len(per_stage[0]), 1, -1), dim)
    return joint.reshape(len(maps[0]), height, width, dim).permute(0, 3, 1, 2)


def patch_embeddings(features: FeatureBatch, layers: list[int], embedding: str = "anomalib") -> tuple[torch.Tensor, int]:
    """``(N, P, D)`` patch embeddings (positions row-major) and the side of their grid."""
    if embedding not in EMBEDDINGS:
        raise ValueError(f"embedding {embedding!r} is not one of {EMBEDDINGS}")
    maps = feature_maps(features, layers)
    grid = (anomalib_embedding if embedding == "anomalib" else original_embedding)(maps)
    return grid.flatten(2).transpose(1, 2), grid.shape[-1]


def projection_dim(n_samples: int, eps: float = PROJECTION_EPS) -> int:
    """The Johnson-Lindenstrauss dimension that keeps ``n_samples`` points' distances within ``1 +- eps``."""
    return int(4 * math.log(n_samples) / (eps**2 / 2 - eps**3 / 3))


def greedy_coreset(embeddings: torch.Tensor, ratio: float, seed: int) -> torch.Tensor:
    """Indices of a greedy k-center coreset of ``int(n * ratio)`` (at least one) of the ``(n, D)`` embeddings.

    As anomalib's ``KCenterGreedy``: distances on a random projection to :func:`projection_dim` dimensions (when
    smaller than ``D``; here Gaussian, anomalib's sparse), a random first centre, then repeatedly the point farthest
    from every centre chosen. ``seed`` fixes the projection and the first centre.
    """
    n = len(embeddings)
    size = max(1, int(n * ratio))
    generator = torch.Generator().manual_seed(seed)
    points = embeddings.float()
    dims = projection_dim(n) if n > 1 else points.shape[1]
    if dims < points.shape[1]:
        projection = torch.randn(points.shape[1], dims, generator=generator) / math.sqrt(dims)
        points = points @ projection.to(points.device)
    chosen = [int(torch.randint(n, (1,), generator=generator))]
    distance = torch.full((n,), float("inf"), device=points.device)
    for _ in range(size - 1):
        distance = torch.minimum(distance, (points - points[chosen[-1]]).norm(dim=1))
        distance[chosen[-1]] = 0
        chosen.append(int(distance.argmax()))
    return torch.tensor(chosen, dtype=torch.long, device=embeddings.device)


def patch_scores(embeddings: torch.Tensor, bank: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(N, P)`` distance of each patch to its nearest bank entry and ``(N, P)`` that entry's index."""
    n, p, d = embeddings.shape
    distance, index = nearest(embeddings.reshape(n * p, d), bank, k=1)
    return distance.reshape(n, p), index.reshape(n, p)


def reweighted_scores(scores: torch.Tensor, nearest_index: torch.Tensor, embeddings: torch.Tensor, bank: torch.Tensor, neighbours: int) -> torch.Tensor:
    """The paper's image score (Eq. 7, anomalib): ``(1 - softmax(d)[0]) s*``.

    Args:
        scores, nearest_index: ``(N, P)`` from :func:`patch_scores`; embeddings: ``(N, P, D)``; bank: ``(M, D)``.
        neighbours: ``k``, the bank entries nearest ``m*`` that ``d`` measures (at most ``M``).

    Returns:
        ``(N,)``.
    """
    rows = torch.arange(len(scores), device=scores.device)
    worst = scores.argmax(dim=1)
    worst_score = scores[rows, worst]
    _, support = nearest(bank[nearest_index[rows, worst]], bank, k=min(neighbours, len(bank)))
    distances = pairwise_distances(embeddings[rows, worst].unsqueeze(1), bank[support]).squeeze(1)
    return (1 - distances.softmax(dim=1)[:, 0]) * worst_score


def anomaly_maps(scores: torch.Tensor, grid: int, input_size: int, sigma: float = 4.0) -> torch.Tensor:
    """``(N, P)`` patch scores -> ``(N, S, S)`` maps at the input side ``S``: nearest upsampling, then the Gaussian."""
    return gaussian_blur(upsample(scores.reshape(-1, grid, grid), input_size, mode="nearest"), sigma, border="mirror")
