"""Patch-to-prompt scores of DevPrompt and PromptAD (pure torch, no files or config).

Shapes: ``N`` images, ``P = G * G`` patches, ``W`` token width, ``D`` joint embedding width.

* DevPrompt (Eqs. 3-7): the cosine of each patch with the abnormal prompt, ``s_a(p)`` (``"abnormal"``), or its
  margin over the normal prompt, ``s_a(p) - s_n(p)`` (``"contrast"``), through the learned scoring parameters
  ``scale * c + bias``; the patch deviation ``|s - mu| / sigma`` is the anomaly map and the Top-K mean the image score.
* PromptAD: ``softmax(t * [s_n, s_a])`` of the abnormal class per patch (the map) and for the class token.
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
