"""PromptAD's training losses on normal patches (pure torch).

Source: FuNz-0/PromptAD ``train_seg.py`` and ``PromptAD/__init__.py::TripletLoss``:

* visual-to-text cross-entropy: each normalised patch embedding against ``[normal anchor, every abnormal
  prompt]`` scaled by the logit scale, target the normal anchor (the abnormal prompts are the explicit
  anomalies of PromptAD's "explicit anomaly margin");
* triplet loss with margin 0 between the patch, the normal anchor and the abnormal anchor. PromptAD's
  segmentation code sums the squared differences over tokens (``dim=1`` of ``(N, P, D)``); here they are summed
  over channels, the distance of each patch, as its classification code and the paper intend;
* alignment of the mean handcrafted and the mean learned abnormal prompt: ``||mean_h - mean_l||^2``.

Anchors are the normalised mean of the un-normalised prompt embeddings (PromptAD's ``build_text_feature_gallery``).

Shapes: ``N`` images, ``P`` patches, ``D`` joint embedding width, ``M`` abnormal prompts.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F


def anchor(embeddings: torch.Tensor) -> torch.Tensor:
    """``(D,)`` normalised mean of ``(n, D)`` un-normalised prompt embeddings."""
    return F.normalize(embeddings.mean(dim=0), dim=-1)


def visual_to_text_loss(
    patches: torch.Tensor, normal_anchor: torch.Tensor, abnormal: torch.Tensor, logit_scale: torch.Tensor | float
) -> torch.Tensor:
    """Cross-entropy of each patch over ``[normal anchor, abnormal prompts]``, target the normal anchor.

    Args:
        patches: ``(N, P, D)`` normalised patch embeddings.
        normal_anchor: ``(D,)`` normalised.
        abnormal: ``(M, D)`` normalised abnormal prompt embeddings (handcrafted and learned).
        logit_scale: multiplies the cosines (PromptAD: the raw ``logit_scale`` parameter).
    """
    logits = torch.cat([(patches @ normal_anchor).unsqueeze(-1), patches @ abnormal.T], dim=-1) * logit_scale
    target = torch.zeros(logits.shape[:-1], dtype=torch.long, device=logits.device)
    return F.cross_entropy(logits.flatten(0, 1), target.flatten())


def triplet_loss(patches: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor, margin: float = 0.0) -> torch.Tensor:
    """``mean relu(|z - positive|^2 - |z - negative|^2 + margin)`` over patches; ``(N, P, D)``, ``(D,)``, ``(D,)``."""
    positive_distance = (patches - positive).pow(2).sum(dim=-1)
    negative_distance = (patches - negative).pow(2).sum(dim=-1)
    return F.relu(positive_distance - negative_distance + margin).mean()


def abnormal_alignment_loss(handcrafted: torch.Tensor, learned: torch.Tensor) -> torch.Tensor:
    """``|mean(normalise(handcrafted)) - mean(normalise(learned))|^2`` of ``(n_h, D)`` and ``(n_l, D)`` prompt embeddings."""
    return (F.normalize(handcrafted, dim=-1).mean(dim=0) - F.normalize(learned, dim=-1).mean(dim=0)).pow(2).sum()
