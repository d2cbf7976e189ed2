"""Training losses of FAPrompt and AnomalyCLIP (pure torch).

Sources: the FAPrompt paper, Eqs. 2, 5, 7, 10; mala-lab/FAPrompt ``train.py`` and ``loss.py`` (``FocalLoss``,
``BinaryDiceLoss``, ``BinaryFocalLoss``, the same as AnomalyCLIP's); zqhang/AnomalyCLIP ``train.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from fsad.maps import square_grid, upsample
from fsad.scorers.faprompt.torch_model import BatchOutputs

FOCAL_SMOOTH = 1e-5  # loss.py FocalLoss: one-hot clamped to [1e-5, 1 - 1e-5], and 1e-5 added to p_t
DICE_SMOOTH = 1.0


def focal_loss(probabilities: torch.Tensor, target: torch.Tensor, gamma: float = 2.0) -> torch.Tensor:
    """Focal loss of ``(B, 2, H, W)`` [normal, abnormal] probabilities against a ``(B, H, W)`` 0/1 mask, mean over pixels.

    ``p_t = sum_c onehot_c p_c + 1e-5`` with the one-hot clamped to ``[1e-5, 1 - 1e-5]``; loss ``-(1 - p_t)^gamma log p_t``.
    """
    onehot = torch.stack([1 - target, target], dim=1).clamp(FOCAL_SMOOTH, 1 - FOCAL_SMOOTH)
    p_t = (onehot * probabilities).sum(dim=1) + FOCAL_SMOOTH
    return (-((1 - p_t) ** gamma) * p_t.log()).mean()


def dice_loss(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``1 - mean_b (2 sum(p t) + 1) / (sum p + sum t + 1)`` over ``(B, H, W)`` maps."""
    prediction, target = prediction.flatten(1), target.flatten(1)
    dice = (2 * (prediction * target).sum(1) + DICE_SMOOTH) / (prediction.sum(1) + target.sum(1) + DICE_SMOOTH)
    return 1 - dice.mean()


def segmentation_loss(probabilities: torch.Tensor, target: torch.Tensor, gamma: float = 2.0) -> torch.Tensor:
    """Eq. 7: focal + dice(abnormal map, mask) + dice(normal map, 1 - mask); ``(B, 2, H, W)``, ``(B, H, W)``."""
    return (
        focal_loss(probabilities, target, gamma)
        + dice_loss(probabilities[:, 1], target)
        + dice_loss(probabilities[:, 0], 1 - target)
    )


def orthogonality_loss(abnormal: torch.Tensor) -> torch.Tensor:
    """Eq. 2: ``sum_{i<j} |cos(t_i, t_j)|`` over the ``(K, D)`` abnormal prompt embeddings (0 for K = 1)."""
    unit = abnormal / abnormal.norm(dim=-1, keepdim=True)
    cosines = unit @ unit.T
    pairs = torch.triu_indices(len(abnormal), len(abnormal), offset=1, device=abnormal.device)
    return cosines[pairs[0], pairs[1]].abs().sum()


def prior_loss(bias: torch.Tensor, labels: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Eq. 5: mean squared entry of the prior ``(B, W)`` of each normal image (label 0); ``mean`` or ``sum`` over them.

    The public code sums ``MSE(bias, 0)`` over the batch's normal images; 0 when the batch has none.
    """
    per_image = (bias[labels == 0] ** 2).mean(dim=1)
    if len(per_image) == 0:
        return bias.new_zeros(())
    return per_image.sum() if reduction == "sum" else per_image.mean()


def binary_focal_loss(score: torch.Tensor, labels: torch.Tensor, gamma: float = 2.0, score_is: str = "probability") -> torch.Tensor:
    """Eq. 10: focal loss of the image score ``(B,)`` against 0/1 labels, mean over the batch.

    ``score_is``: ``probability`` (the paper: the score is a probability); ``logit``: binary cross-entropy with
    logits, as the public code calls its ``BinaryFocalLoss`` on the probability.
    """
    labels = labels.to(score.dtype)
    if score_is == "logit":
        bce = F.binary_cross_entropy_with_logits(score, labels, reduction="none")
    else:
        bce = F.binary_cross_entropy(score.clamp(0, 1), labels, reduction="none")
    return ((1 - torch.exp(-bce)) ** gamma * bce).mean()


@dataclass(frozen=True)
class LossConfig:
    """Weights and options of the training objective (defaults: the FAPrompt paper with the code's numbers).

    Attributes:
        static_map: weight of Eq. 7 on the static maps (AnomalyCLIP's ``lam`` = 4).
        prior_map: weight of Eq. 7 on the prior-adapted maps (0.5 in FAPrompt's code).
        image_ce: weight of the cross-entropy of the image logits (AnomalyCLIP's image loss; FAPrompt's code adds it).
        image_focal: weight of Eq. 10, the focal loss on the image score.
        image_focal_input: ``probability`` or ``logit`` (see :func:`binary_focal_loss`).
        orthogonal: weight of Eq. 2 (0.1).
        prior: weight of Eq. 5 (1).
        prior_reduction: ``mean`` or ``sum`` over the batch's normal images.
        gamma: focal exponent (2).
    """

    static_map: float = 1.0
    prior_map: float = 0.5
    image_ce: float = 0.0
    image_focal: float = 1.0
    image_focal_input: str = "probability"
    orthogonal: float = 0.1
    prior: float = 1.0
    prior_reduction: str = "mean"
    gamma: float = 2.0


def training_loss(outputs: BatchOutputs, masks: torch.Tensor, labels: torch.Tensor, config: LossConfig) -> tuple[torch.Tensor, dict[str, float]]:
    """The combined objective of one batch and its parts.

    Args:
        masks: ``(B, H, W)`` 0/1 ground truth at the loss resolution (zeros for normal images).
        labels: ``(B,)`` 0 normal, 1 anomalous.

    Returns:
        the loss (a scalar with gradients) and its weighted parts as floats.
    """
    size = masks.shape[-1]
    parts = {
        "static_map": config.static_map * sum(segmentation_loss(upsample(square_grid(p), size), masks, config.gamma) for p in outputs.static),
    }
    if outputs.prior is not None:
        parts["prior_map"] = config.prior_map * sum(segmentation_loss(upsample(square_grid(p), size), masks, config.gamma) for p in outputs.prior)
        parts["prior"] = config.prior * prior_loss(outputs.bias, labels, config.prior_reduction)
    if config.image_ce:
        parts["image_ce"] = config.image_ce * F.cross_entropy(outputs.image_logits, labels.long())
    if config.image_focal:
        parts["image_focal"] = config.image_focal * binary_focal_loss(outputs.image_score, labels, config.gamma, config.image_focal_input)
    if len(outputs.abnormal_embeddings) > 1:
        parts["orthogonal"] = config.orthogonal * orthogonality_loss(outputs.abnormal_embeddings)
    total = sum(parts.values())
    return total, {name: float(value.detach()) for name, value in parts.items()}
