"""Patch-to-prompt scores of DevPrompt and PromptAD (pure torch, no files or config).

Shapes: ``N`` images, ``P = G * G`` patches, ``W`` token width, ``D`` joint embedding width.

* DevPrompt (Eqs. 3-7): the cosine of each patch with the abnormal prompt, ``s_a(p)`` (``"abnormal"``), or its
  margin over the normal prompt, ``s_a(p) - s_n(p)`` (``"contrast"``), through the learned scoring parameters
  ``scale * c + bias``; the patch deviation ``|s - mu| / sigma`` is the anomaly map and the Top-K mean the image score.
* PromptAD: ``softmax(t * [s_n, s_a])`` of the abnormal class per patch (the textual map) and for the class token;
  its visual memory's ``min (1 - cos) / 2`` over each gallery, averaged over the galleries (the visual map), and the
  harmonic fusion ``1 / (1 / a + 1 / b)`` of the two (``PromptAD/model.py``: ``calculate_visual_anomaly_score``,
  ``forward``; ``utils/metrics.py::metric_cal_img``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn import functional as F

from fsad.features.types import FeatureBatch
from fsad.scorers.devprompt.deviation import image_deviation, patch_deviations

DEVIATION_SCORES = ("abnormal", "contrast")


def patch_tokens(features: FeatureBatch, vv_block: int | None) -> torch.Tensor:
    """``(N, P, W)`` the tokens the prompts score: the final patch tokens, or the V-V path's after block ``vv_block``."""
    return features.patch_tokens if vv_block is None else features.vv_layers[vv_block]


def prompt_cosines(embeddings: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
    """``(..., 2)`` cosines with the normal and abnormal prototypes (``(2, D)``, normalised) of ``(..., D)`` embeddings."""
    return F.normalize(embeddings, dim=-1) @ prototypes.T


def similarity_score(cosines: torch.Tensor, kind: str) -> torch.Tensor:
    """``c(p)`` before the scoring parameters: ``s_a`` or ``s_a - s_n`` of ``(..., 2)`` cosines; ``(...)``."""
    if kind == "abnormal":
        return cosines[..., 1]
    if kind == "contrast":
        return cosines[..., 1] - cosines[..., 0]
    raise ValueError(f"unknown deviation_score {kind!r}; use one of {DEVIATION_SCORES}")


def calibrated_scoring(similarities: torch.Tensor, mu: torch.Tensor, sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Initial ``(log scale, bias)`` that map the normal patches' similarities to mean ``mu`` and std ``sigma``.

    DevPrompt assumes normal patch similarities are Gaussian with the reference's ``mu`` and ``sigma`` (Eq. 4);
    starting from that calibration makes a normal image's deviations about ``|N(0, 1)|`` before training.

    Args:
        similarities: ``(N, P)`` similarities ``c(p)`` of the normal images.
    """
    spread = similarities.std().clamp(min=1e-6)
    scale = sigma / spread
    return scale.log(), mu - scale * similarities.mean()


@dataclass
class DevPromptOutput:
    """Scores of ``N`` images: ``deviations`` ``(N, P)``, ``image_deviation`` ``(N,)`` (the Top-K mean)."""

    deviations: torch.Tensor
    image_deviation: torch.Tensor


def devprompt_scores(
    patches: torch.Tensor, prototypes: torch.Tensor, log_scale: torch.Tensor, bias: torch.Tensor,
    mu: torch.Tensor, sigma: torch.Tensor, k: int, kind: str = "abnormal",
) -> DevPromptOutput:
    """Patch deviations and image deviations.

    Args:
        patches: ``(N, P, D)`` joint-space patch embeddings.
        prototypes: ``(2, D)`` normalised normal and abnormal prompt prototypes.
        log_scale, bias: the scoring parameters (scalars): ``s = exp(log_scale) * c + bias``.
        mu, sigma: the reference statistics of the N(0, 1) prior.
        k: patches kept by the Top-K module.
    """
    scores = log_scale.exp() * similarity_score(prompt_cosines(patches, prototypes), kind) + bias
    deviations = patch_deviations(scores, mu, sigma)
    return DevPromptOutput(deviations, image_deviation(deviations, k))


def textual_anomaly(embeddings: torch.Tensor, prototypes: torch.Tensor, logit_scale: torch.Tensor | float) -> torch.Tensor:
    """PromptAD's textual score: ``softmax(t * [s_n, s_a])`` of the abnormal class; ``(..., D)`` -> ``(...)``."""
    return (prompt_cosines(embeddings, prototypes) * logit_scale).softmax(dim=-1)[..., 1]


def memory_gallery(tokens: torch.Tensor) -> torch.Tensor:
    """``(M, W)`` normalised gallery of the normal shots' ``(k, P, W)`` tokens (PromptAD's ``build_image_feature_gallery``)."""
    return F.normalize(tokens.reshape(-1, tokens.shape[-1]).float(), dim=-1)


def visual_anomaly(tokens: list[torch.Tensor], galleries: list[torch.Tensor]) -> torch.Tensor:
    """PromptAD's visual map ``(N, P)``: per gallery ``min over it of (1 - cos) / 2``, averaged over the galleries.

    Args:
        tokens: per memory block ``(N, P, W)`` test tokens (normalised here).
        galleries: per memory block ``(M, W)`` normalised gallery (:func:`memory_gallery`), in the same order.
    """
    if not tokens or len(tokens) != len(galleries):
        raise ValueError(f"visual_anomaly needs one gallery per token tensor, got {len(tokens)} and {len(galleries)}")
    scores = [((1.0 - F.normalize(t.float(), dim=-1) @ g.T).amin(dim=-1) / 2.0) for t, g in zip(tokens, galleries)]
    return torch.stack(scores).mean(dim=0)


def harmonic_fusion(textual: torch.Tensor, visual: torch.Tensor) -> torch.Tensor:
    """``1 / (1 / textual + 1 / visual)``, PromptAD's fusion of its maps and of its image scores (same shapes)."""
    return 1.0 / (1.0 / textual + 1.0 / visual)
