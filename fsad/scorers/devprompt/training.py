"""The training loop of PromptAD and DevPrompt: PromptAD's losses on the normal shots, plus DevPrompt's deviation
loss on the normal shots and anomalous examples (pure torch; the backbone stays frozen).

One epoch is one SGD step on all training images, as PromptAD's batch of 400 holds every shot; the learning rate
follows a cosine from ``lr`` to ``lr_min`` over the epochs (``CosineAnnealingLR``, stepped per epoch).

Shapes: ``k`` normal shots, ``S`` anomalous examples, ``P`` patches, ``D`` joint embedding width.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn import functional as F

from fsad.scorers.devprompt.deviation import deviation_loss, top_k_count
from fsad.scorers.devprompt.losses import abnormal_alignment_loss, anchor, triplet_loss, visual_to_text_loss
from fsad.scorers.devprompt.prompt_learner import PromptLearner
from fsad.scorers.devprompt.torch_model import calibrated_scoring, devprompt_scores, similarity_score, prompt_cosines
from fsad.text.learned_prompts import encode_shared_prefix, pooled_positions


@dataclass(frozen=True)
class TrainingConfig:
    """The knobs of one fit (defaults and meanings in the method's ``schema.yaml``)."""

    epochs: int
    lr: float
    momentum: float
    weight_decay: float
    lr_min: float
    alignment_weight: float
    triplet_margin: float
    promptad_weight: float
    deviation: bool
    lambda_dev: float
    margin: float
    topk_ratio: float
    deviation_score: str
    deviation_average: str


@dataclass
class TrainedPrompts:
    """What a fit learned.

    Attributes:
        prototypes: ``(2, D)`` normalised normal and abnormal prompt prototypes.
        log_scale, bias: the scoring parameters (scalars; None without the deviation loss).
        losses: total loss per epoch.
        terms: each loss term at the last epoch.
        training_deviations: ``"{initial,final}_{normal,anomalous}"`` -> the image deviations ``D`` of the training
            images before and after training (deviation loss only).
    """

    prototypes: torch.Tensor
    log_scale: torch.Tensor | None
    bias: torch.Tensor | None
    losses: list[float]
    terms: dict[str, float]
    training_deviations: dict[str, list[float]] = field(default_factory=dict)


def encode_prompts(
    model: nn.Module, learner: PromptLearner, autocast_dtype: torch.dtype | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Un-normalised ``(n, D)`` embeddings of the normal, handcrafted and learned abnormal prompts, in one text-tower pass.

    Every prompt starts with the start token and one set of normal context vectors; those ``1 + n_ctx`` positions are
    computed once per context set (:func:`fsad.text.learned_prompts.encode_shared_prefix`).
    """
    prompts = learner()
    groups = [prompts.normal, prompts.handcrafted, prompts.learned]
    embeddings = torch.cat(groups)
    tokens = torch.cat([prompts.normal_tokens, prompts.handcrafted_tokens, prompts.learned_tokens])
    with torch.autocast(embeddings.device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
        encoded = encode_shared_prefix(model, embeddings, pooled_positions(model, tokens), 1 + learner.n_ctx).float()
    return tuple(encoded.split([len(group) for group in groups]))


def prompt_prototypes(normal: torch.Tensor, handcrafted: torch.Tensor, learned: torch.Tensor) -> torch.Tensor:
    """``(2, D)``: the normal anchor and the abnormal anchor (handcrafted and learned prompts together)."""
    return torch.stack([anchor(normal), anchor(torch.cat([handcrafted, learned]))])


def train_prompts(
    model: nn.Module,
    learner: PromptLearner,
    normal_patches: torch.Tensor,
    anomalous_patches: torch.Tensor | None,
    logit_scale: float,
    config: TrainingConfig,
    reference: tuple[torch.Tensor, torch.Tensor] | None = None,
    autocast_dtype: torch.dtype | None = None,
) -> TrainedPrompts:
    """Train ``learner`` (and, with the deviation loss, the scoring parameters); ``model`` is never updated.

    Args:
        normal_patches: ``(k, P, D)`` normalised patch embeddings of the normal shots.
        anomalous_patches: ``(S, P, D)`` of the anomalous examples (needed by the deviation loss).
        reference: ``(mu, sigma)`` of the N(0, 1) reference scores (needed by the deviation loss).
    """
    if config.deviation and (anomalous_patches is None or reference is None):
        raise ValueError("the deviation loss needs anomalous examples and the reference statistics")
    if not config.deviation and config.promptad_weight == 0:
        raise ValueError("without the deviation loss and with promptad_weight 0 there is no loss to train on")
    parameters = list(learner.parameters())
    log_scale = bias = None
    if config.deviation:
        mu, sigma = (t.to(normal_patches.device) for t in reference)
        patches = torch.cat([normal_patches, anomalous_patches])
        labels = torch.cat([torch.zeros(len(normal_patches)), torch.ones(len(anomalous_patches))]).to(patches.device)
        k = top_k_count(patches.shape[1], config.topk_ratio)
        with torch.no_grad():
            prototypes = prompt_prototypes(*encode_prompts(model, learner, autocast_dtype))
            normal_similarities = similarity_score(prompt_cosines(normal_patches, prototypes), config.deviation_score)
            log_scale, bias = (nn.Parameter(t.clone()) for t in calibrated_scoring(normal_similarities, mu, sigma))
            initial = devprompt_scores(patches, prototypes, log_scale, bias, mu, sigma, k, config.deviation_score)
        parameters += [log_scale, bias]
    optimizer = torch.optim.SGD(parameters, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs, eta_min=config.lr_min)

    losses, terms = [], {}
    for _ in range(config.epochs):
        optimizer.zero_grad()
        normal, handcrafted, learned = encode_prompts(model, learner, autocast_dtype)
        prototypes = prompt_prototypes(normal, handcrafted, learned)
        abnormal = F.normalize(torch.cat([handcrafted, learned]), dim=-1)
        step_terms = {}
        if config.promptad_weight > 0:
            step_terms = {
                "visual_to_text": config.promptad_weight * visual_to_text_loss(normal_patches, prototypes[0], abnormal, logit_scale),
                "triplet": config.promptad_weight * triplet_loss(normal_patches, prototypes[0], prototypes[1], config.triplet_margin),
                "alignment": config.promptad_weight * config.alignment_weight * abnormal_alignment_loss(handcrafted, learned),
            }
        if config.deviation:
            scored = devprompt_scores(patches, prototypes, log_scale, bias, mu, sigma, k, config.deviation_score)
            step_terms["deviation"] = deviation_loss(scored.image_deviation, labels, config.margin, config.lambda_dev, config.deviation_average)
        loss = sum(step_terms.values())
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
        terms = {name: value.item() for name, value in step_terms.items()}

    with torch.no_grad():
        prototypes = prompt_prototypes(*encode_prompts(model, learner, autocast_dtype))
        trained = TrainedPrompts(prototypes, log_scale, bias, losses, terms)
        if config.deviation:
            final = devprompt_scores(patches, prototypes, log_scale, bias, mu, sigma, k, config.deviation_score).image_deviation
            trained.training_deviations = {
                f"{when}_{group}": deviations[labels == label].tolist()
                for when, deviations in (("initial", initial.image_deviation), ("final", final))
                for group, label in (("normal", 0), ("anomalous", 1))
            }
    return trained
