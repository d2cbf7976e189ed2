"""WinCLIP and WinCLIP+ scores as pure tensor maths (no files, no config).

Shapes: ``N`` images, ``G`` patch-grid side, ``P = G * G`` patches, ``n_k`` windows of side ``k``
(``(G - k + 1) ** 2``, in ``torch.nn.functional.unfold`` order), ``D`` projected embedding width,
``W`` token width. Numbers follow anomalib's ``WinClipModel`` (anomalib 2.x), computed batched over
images, windows and scales.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn import functional as F

from fsad.features.types import FeatureBatch


def class_scores(embeddings: torch.Tensor, text_embeddings: torch.Tensor, temperature: float = 0.07) -> torch.Tensor:
    """Zero-shot anomaly probability (WinCLIP Eq. 1).

    Args:
        embeddings: ``(..., D)`` image or window embeddings (any norm).
        text_embeddings: ``(2, D)`` normal and anomalous class embeddings (any norm).
        temperature: softmax temperature on the cosine similarities.

    Returns:
        ``(...)`` softmax probability of the anomalous class.
    """
    cosine = F.normalize(embeddings, dim=-1) @ F.normalize(text_embeddings, dim=-1).T
    return (cosine / temperature).softmax(dim=-1)[..., 1]


def harmonic_aggregation(window_scores: torch.Tensor, grid: int, window: int) -> torch.Tensor:
    """Per patch, the harmonic mean of the scores of all windows covering it.

    The reciprocal scores are summed onto the patches with ``torch.nn.functional.fold`` (the adjoint
    of the ``unfold`` that orders the windows), so no Python loop runs over patches or windows. As in
    anomalib, a zero window score makes every patch it covers zero (``count / inf``), and
    ``nan_to_num(posinf=0)`` clears non-finite results.

    Args:
        window_scores: ``(N, n_k)`` scores of the windows of side ``window``.

    Returns:
        ``(N, G, G)`` aggregated patch scores.
    """
    n_images, n_windows = window_scores.shape
    expected = (grid - window + 1) ** 2
    if n_windows != expected:
        raise ValueError(f"{n_windows} window scores given; a {grid}x{grid} grid has {expected} windows of side {window}")
    reciprocal = (1 / window_scores).unsqueeze(1).expand(n_images, window * window, n_windows)
    reciprocal_sum = F.fold(reciprocal, output_size=(grid, grid), kernel_size=window)[:, 0]
    coverage = _window_coverage_counts(grid, window, window_scores.device, window_scores.dtype)
    return (coverage / reciprocal_sum).nan_to_num(posinf=0.0)


def _window_coverage_counts(grid: int, window: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """``(G, G)`` number of windows of side ``window`` that cover each patch."""
    ones = torch.ones(1, window * window, (grid - window + 1) ** 2, device=device, dtype=dtype)
    return F.fold(ones, output_size=(grid, grid), kernel_size=window)[0, 0]


def zero_shot_map(
    image_scores: torch.Tensor, window_scores: dict[int, torch.Tensor], grid: int
) -> torch.Tensor:
    """Zero-shot anomaly map: harmonic mean of the image score and the per-scale window maps.

    Args:
        image_scores: ``(N,)`` zero-shot image scores (:func:`class_scores` of the image embeddings).
        window_scores: window side -> ``(N, n_k)`` zero-shot window scores.

    Returns:
        ``(N, G, G)``.
    """
    scales = [image_scores.reshape(-1, 1, 1).expand(-1, grid, grid)]
    scales += [harmonic_aggregation(scores, grid, k) for k, scores in window_scores.items()]
    return len(scales) / (1 / torch.stack(scales)).sum(dim=0)


@dataclass
class ReferenceMemory:
    """WinCLIP+ memory of the normal reference images, L2-normalised and pooled over images and positions.

    Attributes:
        patch_tokens: ``(K * P, W)`` patch tokens of the ``K`` references.
        windows: window side -> ``(K * n_k, D)`` window embeddings of the references.
    """

    patch_tokens: torch.Tensor
    windows: dict[int, torch.Tensor]


def build_reference_memory(references: FeatureBatch, window_sizes: list[int]) -> ReferenceMemory:
    """Pool the references' patch tokens and window embeddings into a :class:`ReferenceMemory`."""
    pool = lambda t: F.normalize(t.reshape(-1, t.shape[-1]).float(), dim=-1)  # noqa: E731
    return ReferenceMemory(pool(references.patch_tokens), {k: pool(references.windows[k]) for k in window_sizes})


def visual_association_scores(embeddings: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
    """Distance to the nearest memory entry, ``min_m (1 - cos(e, m)) / 2`` (WinCLIP Eq. 4).

    Args:
        embeddings: ``(N, L, C)`` patch tokens or window embeddings of the test images.
        memory: ``(M, C)`` L2-normalised reference entries of the same kind.

    Returns:
        ``(N, L)`` in [0, 1].
    """
    # 1 - x is monotone in floating point, so this is exactly min(1 - cos) without the (N, L, M) subtraction.
    nearest = (F.normalize(embeddings, dim=-1) @ memory.T).amax(dim=-1)
    return (1 - nearest) / 2


def few_shot_maps(features: FeatureBatch, memory: ReferenceMemory) -> dict[str, torch.Tensor]:
    """WinCLIP+ per-scale few-shot maps.

    Returns:
        ``"patch"`` -> ``(N, G, G)`` patch-token association map, and for every window side ``k`` in the
        memory, ``"w{k}"`` -> ``(N, G, G)`` harmonic aggregation of the window association scores.
    """
    grid = features.grid
    maps = {"patch": visual_association_scores(features.patch_tokens.float(), memory.patch_tokens).reshape(-1, grid, grid)}
    for k, window_memory in memory.windows.items():
        window_scores = visual_association_scores(features.windows[k].float(), window_memory)
        maps[f"w{k}"] = harmonic_aggregation(window_scores, grid, k)
    return maps


@dataclass
class WinClipOutput:
    """Scores of ``N`` test images.

    Attributes:
        image_scores: ``(N,)`` final image scores.
        maps: ``(N, G, G)`` final patch-grid anomaly maps.
        sub_scores: name -> ``(N,)``: ``"zero_shot"`` (zero-shot image score) and, with references,
            ``"memory_patch"``, ``"memory_w2"``, ... (maximum of each scale's few-shot map).
    """

    image_scores: torch.Tensor
    maps: torch.Tensor
    sub_scores: dict[str, torch.Tensor]


def winclip_scores(
    features: FeatureBatch,
    text_embeddings: torch.Tensor,
    window_sizes: list[int],
    temperature: float = 0.07,
    memory: ReferenceMemory | None = None,
) -> WinClipOutput:
    """WinCLIP (zero-shot, ``memory=None``) or WinCLIP+ (few-shot) scores, combined as anomalib does.

    With a memory: map = (zero-shot map + mean of the few-shot maps) / 2 and image score =
    (zero-shot image score + max of the few-shot map) / 2.

    Args:
        features: the test images' features, holding every size in ``window_sizes``.
        text_embeddings: ``(2, D)`` normal / anomalous class embeddings.
        window_sizes: window sides in patches (WinCLIP: 2 and 3).
        memory: the normal references' memory, or None for zero-shot.
    """
    grid = features.grid
    text_embeddings = text_embeddings.float()
    image_scores = class_scores(features.image_embeddings.float(), text_embeddings, temperature)
    window_scores = {k: class_scores(features.windows[k].float(), text_embeddings, temperature) for k in window_sizes}
    maps = zero_shot_map(image_scores, window_scores, grid)
    sub_scores = {"zero_shot": image_scores}
    if memory is not None:
        per_scale = few_shot_maps(features, memory)
        few_shot = torch.stack(list(per_scale.values())).mean(dim=0)
        maps = (maps + few_shot) / 2
        image_scores = (image_scores + few_shot.amax(dim=(-2, -1))) / 2
        sub_scores |= {f"memory_{name}": scale_map.amax(dim=(-2, -1)) for name, scale_map in per_scale.items()}
    return WinClipOutput(image_scores, maps, sub_scores)
