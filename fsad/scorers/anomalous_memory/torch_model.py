"""Anomalous-memory scores (Abdali et al., "Anomalous Samples for Few-Shot Anomaly Detection") as tensor maths.

One anomalous training image with its pixel mask gives two memories per scale: its windows that do not
touch the defect feed the reference (normal) memory, its windows covered by the defect feed the
anomalous memory. A test image gets nine sub-scores, each the maximum of its own patch-grid map:

- ``zero_shot``: WinCLIP's zero-shot image score (its map is WinCLIP's zero-shot map);
- ``reference_{scale}``: distance to the nearest normal entry, ``min (1 - cos) / 2`` (WinCLIP+ Eq. 4);
- ``anomalous_{scale}``: similarity to the nearest anomalous entry, ``max (1 + cos) / 2`` -- the mirror
  of the reference distance, so both lie in [0, 1] and grow with anomaly evidence.

Scales: ``patch`` (the patch tokens, as WinCLIP+) and ``w{k}`` for window sides ``k`` (the paper's mid,
large and large+ are ``w2``, ``w3``, ``w7`` at 240 px). Window scores reach the patches by WinCLIP's
harmonic aggregation. The image sub-score is taken per scale before any averaging, as the paper does.

Shapes: ``N`` images, ``G`` grid side, ``P = G * G`` patches, ``n_k`` windows of side ``k``, ``D``
embedding width, ``W`` token width.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
from torch.nn import functional as F

from fsad.backbones.windows import window_coverage
from fsad.features.types import FeatureBatch
from fsad.scorers.winclip.torch_model import (
    class_scores,
    harmonic_aggregation,
    visual_association_scores,
    zero_shot_map,
)

PATCH_SCALE = "patch"
PARTIAL_WINDOW_POLICIES = ("exclude", "normal")


def scale_names(window_sizes: list[int]) -> list[str]:
    """``["patch", "w2", "w3", ...]``: the patch scale first, then the window sides in the given order."""
    return [PATCH_SCALE] + [f"w{k}" for k in window_sizes]


def sub_score_names(window_sizes: list[int]) -> list[str]:
    """The nine (for three window sizes) sub-score names in weight-vector order."""
    scales = scale_names(window_sizes)
    return ["zero_shot"] + [f"reference_{s}" for s in scales] + [f"anomalous_{s}" for s in scales]


def patch_coverage(mask: torch.Tensor, grid: int) -> torch.Tensor:
    """Share of anomalous pixels in each patch of the model input.

    The backbone's preprocessing resizes the whole image to a square (as anomalib's WinCLIP does, no
    crop), so the whole mask is area-averaged onto the patch grid.

    Args:
        mask: ``(H, W)`` binary (or [0, 1]) pixel mask of the original image.

    Returns:
        ``(G, G)`` float values in [0, 1].
    """
    if mask.ndim != 2:
        raise ValueError(f"mask must be (H, W), got shape {tuple(mask.shape)}")
    return F.adaptive_avg_pool2d(mask.float().clamp(0, 1)[None, None], grid)[0, 0]


@dataclass
class ScaleChoice:
    """Which entries of one scale went to which memory, and why (logged and saved with the scores).

    Attributes:
        scale: ``"patch"`` or ``"w{k}"``.
        anomalous: indices of the windows (patches) in the anomalous memory.
        normal: indices of the windows (patches) in the reference memory.
        anomalous_fallback: no window reached the threshold; the most covered ones were taken.
        normal_fallback: no window was free of the defect; the least covered ones were taken.
        max_coverage: the largest window coverage of this scale.
    """

    scale: str
    anomalous: list[int]
    normal: list[int]
    anomalous_fallback: bool
    normal_fallback: bool
    max_coverage: float

    def summary(self) -> dict[str, object]:
        return {
            "scale": self.scale,
            "n_anomalous": len(self.anomalous),
            "n_normal": len(self.normal),
            "anomalous_fallback": self.anomalous_fallback,
            "normal_fallback": self.normal_fallback,
            "max_coverage": round(self.max_coverage, 4),
        }


def split_by_coverage(coverage: torch.Tensor, threshold: float, partial_windows: str = "exclude", scale: str = "") -> ScaleChoice:
    """Assign windows to the anomalous and the reference memory by their defect coverage.

    Windows with coverage ``>= threshold`` are anomalous; when none reaches it (a defect smaller than a
    window), the windows of maximal coverage are. Windows that do not touch the defect are normal.
    Windows that touch it below the threshold go to neither memory by default (``"exclude"``): the
    paper feeds the reference memory from the *non-anomalous regions*, and a window holding part of a
    defect would teach the normal memory that defect. ``"normal"`` puts them into the reference memory.
    When no window is left for the reference memory (every window touches the defect: a large defect,
    or a scale with a single window such as 7 patches on a 7x7 grid), the least covered non-anomalous
    windows form it, and when every window is anomalous the least covered windows serve both memories,
    so that every scale keeps both sub-scores. Both fallbacks are flagged in the returned choice.

    Args:
        coverage: ``(n_k,)`` defect coverage per window in [0, 1].
    """
    if partial_windows not in PARTIAL_WINDOW_POLICIES:
        raise ValueError(f"unknown partial_windows {partial_windows!r}; use one of {PARTIAL_WINDOW_POLICIES}")
    if not 0 < threshold <= 1:
        raise ValueError(f"coverage_threshold must lie in (0, 1], got {threshold}")
    top = float(coverage.max())
    if top <= 0:
        raise ValueError(f"scale {scale!r}: the defect mask covers no patch of the model input (the mask is empty)")
    anomalous = coverage >= threshold
    anomalous_fallback = not bool(anomalous.any())
    if anomalous_fallback:
        anomalous = coverage == top
    normal = coverage == 0 if partial_windows == "exclude" else ~anomalous
    normal_fallback = not bool(normal.any())
    if normal_fallback:
        rest = ~anomalous
        candidates = rest if bool(rest.any()) else torch.ones_like(anomalous)
        normal = candidates & (coverage == coverage[candidates].min())
    as_list = lambda m: torch.nonzero(m).flatten().tolist()  # noqa: E731
    return ScaleChoice(scale, as_list(anomalous), as_list(normal), anomalous_fallback, normal_fallback, top)


@dataclass
class DualMemory:
    """Reference and anomalous memories per scale, L2-normalised.

    Attributes:
        reference: scale -> ``(M_r, C)`` entries (``C = W`` for the patch scale, ``D`` for windows).
        anomalous: scale -> ``(M_a, C)`` entries.
        choices: scale -> the :class:`ScaleChoice` that built them.
    """

    reference: dict[str, torch.Tensor]
    anomalous: dict[str, torch.Tensor]
    choices: dict[str, ScaleChoice] = field(default_factory=dict)


def build_dual_memory(
    sample: FeatureBatch,
    mask: torch.Tensor,
    window_sizes: list[int],
    coverage_threshold: float,
    partial_windows: str = "exclude",
) -> DualMemory:
    """Memories from one anomalous image.

    Args:
        sample: features of the anomalous image (``N = 1``), holding every size in ``window_sizes``.
        mask: ``(H, W)`` its pixel mask (see :func:`patch_coverage`).
    """
    if sample.patch_tokens.shape[0] != 1:
        raise ValueError(f"build_dual_memory takes one anomalous image, got {sample.patch_tokens.shape[0]}")
    grid = sample.grid
    per_patch = patch_coverage(mask.to(sample.patch_tokens.device), grid)
    entries = {PATCH_SCALE: (sample.patch_tokens[0], per_patch.reshape(-1))}
    for k in window_sizes:
        entries[f"w{k}"] = (sample.windows[k][0], window_coverage(grid, k, per_patch))
    reference, anomalous, choices = {}, {}, {}
    for scale, (embeddings, coverage) in entries.items():
        choice = split_by_coverage(coverage, coverage_threshold, partial_windows, scale)
        normalised = F.normalize(embeddings.float(), dim=-1)
        reference[scale] = normalised[choice.normal]
        anomalous[scale] = normalised[choice.anomalous]
        choices[scale] = choice
    return DualMemory(reference, anomalous, choices)


def with_generated_references(memory: DualMemory, generated: FeatureBatch, window_sizes: list[int]) -> DualMemory:
    """``memory`` with every patch token and window embedding of ``generated`` (normal images, e.g. a generator's pool,
    ``N`` of them) appended, L2-normalised, to the reference memory of its scale; the anomalous memory unchanged."""
    reference = dict(memory.reference)
    entries = {PATCH_SCALE: generated.patch_tokens, **{f"w{k}": generated.windows[k] for k in window_sizes}}
    for scale, embeddings in entries.items():
        added = F.normalize(embeddings.reshape(-1, embeddings.shape[-1]).float(), dim=-1)
        reference[scale] = torch.cat([reference[scale], added.to(reference[scale].device)])
    return DualMemory(reference, memory.anomalous, memory.choices)


def anomalous_similarity_scores(embeddings: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
    """Similarity to the nearest anomalous entry, ``max_m (1 + cos(e, m)) / 2`` (the paper's Eq. 1).

    Args:
        embeddings: ``(N, L, C)`` patch tokens or window embeddings of the test images.
        memory: ``(M, C)`` L2-normalised anomalous entries.

    Returns:
        ``(N, L)`` in [0, 1].
    """
    return (1 + (F.normalize(embeddings, dim=-1) @ memory.T).amax(dim=-1)) / 2


def _scale_map(
    features: FeatureBatch, scale: str, scores_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], memory: torch.Tensor
) -> torch.Tensor:
    """``(N, G, G)`` map of one scale: patch scores reshaped, window scores harmonically aggregated."""
    grid = features.grid
    if scale == PATCH_SCALE:
        return scores_fn(features.patch_tokens.float(), memory).reshape(-1, grid, grid)
    k = int(scale[1:])
    return harmonic_aggregation(scores_fn(features.windows[k].float(), memory), grid, k)


def sub_score_maps(
    features: FeatureBatch, memory: DualMemory, text_embeddings: torch.Tensor, window_sizes: list[int], temperature: float = 0.07
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """The nine per-scale maps of the test images.

    Returns:
        (maps, zero_shot_image_scores): ``maps`` maps every name of :func:`sub_score_names` to
        ``(N, G, G)``; ``zero_shot_image_scores`` is ``(N,)``, the zero-shot sub-score itself (the image
        embedding's score, as in WinCLIP, not the maximum of the zero-shot map).
    """
    text_embeddings = text_embeddings.float()
    image_scores = class_scores(features.image_embeddings.float(), text_embeddings, temperature)
    window_scores = {k: class_scores(features.windows[k].float(), text_embeddings, temperature) for k in window_sizes}
    maps = {"zero_shot": zero_shot_map(image_scores, window_scores, features.grid)}
    scales = scale_names(window_sizes)
    for scale in scales:
        maps[f"reference_{scale}"] = _scale_map(features, scale, visual_association_scores, memory.reference[scale])
    for scale in scales:
        maps[f"anomalous_{scale}"] = _scale_map(features, scale, anomalous_similarity_scores, memory.anomalous[scale])
    return maps, image_scores


@dataclass
class AnomalousMemoryOutput:
    """Scores of ``N`` test images.

    Attributes:
        sub_scores: ``(N, S)`` the sub-scores in :func:`sub_score_names` order (``S = 9`` for three windows).
        maps: ``(N, S, G, G)`` their maps in the same order.
    """

    sub_scores: torch.Tensor
    maps: torch.Tensor


def anomalous_memory_scores(
    features: FeatureBatch, memory: DualMemory, text_embeddings: torch.Tensor, window_sizes: list[int], temperature: float = 0.07
) -> AnomalousMemoryOutput:
    """Sub-scores and maps of the test images: each memory sub-score is the maximum of its own map."""
    maps, zero_shot_image = sub_score_maps(features, memory, text_embeddings, window_sizes, temperature)
    stacked = torch.stack([maps[name] for name in sub_score_names(window_sizes)], dim=1)
    sub_scores = stacked.amax(dim=(-2, -1))
    sub_scores[:, 0] = zero_shot_image
    return AnomalousMemoryOutput(sub_scores, stacked)


def weighted_total(sub_scores: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``(N, S) @ (S,) -> (N,)`` the weighted sum of the sub-scores."""
    return sub_scores @ weights.to(sub_scores)


def fused_map(maps: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``(N, S, G, G)`` maps weighted by ``(S,)`` weights -> ``(N, G, G)`` fused map."""
    return torch.einsum("nsgh,s->ngh", maps, weights.to(maps))
