"""FAPrompt / AnomalyCLIP forward pass on cached patch tokens: similarity maps, DAP, image scores (pure torch).

Sources: the FAPrompt paper, Eqs. 3, 4, 6, 8, 9, 11; mala-lab/FAPrompt ``train.py`` / ``test.py`` and
``AnomalyCLIP_lib/model_load.py`` (``compute_similarity``, ``get_similarity_map``).

Patch tokens arrive projected (``visual.proj``) and normalised, one ``(B, P, D)`` tensor per token level
(the final block's V-V tokens in both public codes, blocks 6/12/18/24 in AnomalyCLIP's paper). Each level
gives patch probabilities ``softmax(cos(patch, [t_n, t_a]) / tau)`` (Eq. 3); a map's patch anomaly score is
``(p_abnormal + 1 - p_normal) / 2`` (Eq. 11), averaged over levels. The static map uses the learned prompts;
with DAP the prior-adapted map uses per-image prompts whose abnormal tokens carry the prior (Eq. 4).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fsad.maps import square_grid, upsample
from fsad.scorers.faprompt.prompt_learner import PromptLearner

IMAGE_SCORES = ("eq9", "code", "probability")
PRIOR_SELECTIONS = ("top", "first")


@dataclass(frozen=True)
class ScoreConfig:
    """How similarities become scores.

    Attributes:
        temperature: softmax temperature of every image/patch-text similarity (0.07 in both codes).
        prior_selection: ``top``: DAP reads the k patches most similar to the abnormality prototype (paper);
            ``first``: the first k patches (what the public code gathers: it indexes with its loop counter).
        image_score: ``eq9``: ``(p + mean of the maps' maxima) / 2`` (paper); ``code``:
            ``(p + (2 max_static + max_prior) / 3) / 2`` (public code); ``probability``: ``p`` (AnomalyCLIP).
    """

    temperature: float = 0.07
    prior_selection: str = "top"
    image_score: str = "eq9"

    def __post_init__(self) -> None:
        if self.image_score not in IMAGE_SCORES or self.prior_selection not in PRIOR_SELECTIONS:
            raise ValueError(f"image_score must be one of {IMAGE_SCORES} and prior_selection one of {PRIOR_SELECTIONS}")


@dataclass
class BatchOutputs:
    """What one forward pass over a batch gives.

    Attributes:
        static: per level ``(B, P, 2)`` patch probabilities [normal, abnormal] with the learned prompts.
        prior: the same with the prior-adapted prompts (DAP), else None.
        bias: ``(B, W)`` DAP's prior, else None.
        abnormal_embeddings: ``(K, D)`` the static abnormal prompts' text embeddings (for the orthogonality loss).
        image_logits: ``(B, 2)`` ``cos(image, [t_n, t_a]) / tau`` (with the prior-adapted t_a under DAP).
        text_probability: ``(B,)`` Eq. 8, the softmax of ``image_logits``' abnormal entry.
        map_maxima: ``(B, M)`` maximum patch anomaly score of each map (static, then prior).
        image_score: ``(B,)`` the configured image score.
    """

    static: list[torch.Tensor]
    prior: list[torch.Tensor] | None
    bias: torch.Tensor | None
    abnormal_embeddings: torch.Tensor
    image_logits: torch.Tensor
    text_probability: torch.Tensor
    map_maxima: torch.Tensor
    image_score: torch.Tensor

    @property
    def maps(self) -> list[list[torch.Tensor]]:
        """Per map (static, then prior), its per-level patch probabilities."""
        return [self.static] if self.prior is None else [self.static, self.prior]


def normalise(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True)


def text_pair(normal: torch.Tensor, abnormal: torch.Tensor) -> torch.Tensor:
    """``[t_n, t_a]`` normalised, ``t_a`` the prototype (mean) of the abnormal embeddings.

    Args:
        normal: ``(D,)``; abnormal: ``(K, D)`` or ``(B, K, D)``.

    Returns:
        ``(1, 2, D)`` or ``(B, 2, D)``.
    """
    prototype = abnormal.mean(dim=-2)
    prototype = prototype[None] if prototype.dim() == 1 else prototype
    return normalise(torch.stack([normal.expand_as(prototype), prototype], dim=1))


def patch_probabilities(tokens: torch.Tensor, text: torch.Tensor, temperature: float) -> torch.Tensor:
    """Eq. 3: ``(B, P, D)`` normalised tokens and ``(B or 1, 2, D)`` text -> ``(B, P, 2)`` [normal, abnormal] probabilities."""
    return (torch.einsum("bpd,bcd->bpc", tokens, text.expand(len(tokens), -1, -1)) / temperature).softmax(dim=-1)


def patch_anomaly(levels: list[torch.Tensor]) -> torch.Tensor:
    """``(B, P)`` Eq. 11's ``(p_abnormal + 1 - p_normal) / 2`` of one map, averaged over its levels."""
    return torch.stack([(p[..., 1] + 1 - p[..., 0]) / 2 for p in levels]).mean(dim=0)


def select_prior_patches(tokens: torch.Tensor, abnormal_probability: torch.Tensor, k: int, how: str) -> torch.Tensor:
    """DAP's input: ``(B, P, D)`` tokens -> ``(B, k, D)``, the k most abnormal patches (``top``) or the first k (``first``).

    Args:
        abnormal_probability: ``(B, P)`` each patch's static abnormal probability (similarity to the prototype).
    """
    if tokens.shape[1] < k:
        raise ValueError(f"DAP reads {k} patches but the images have {tokens.shape[1]}; lower dap_patches")
    if how == "first":
        return tokens[:, :k]
    index = abnormal_probability.topk(k, dim=1).indices
    return torch.gather(tokens, 1, index[..., None].expand(-1, -1, tokens.shape[-1]))


def image_score(text_probability: torch.Tensor, map_maxima: torch.Tensor, how: str) -> torch.Tensor:
    """Eq. 9 and its alternatives (:class:`ScoreConfig`); ``map_maxima`` ``(B, M)`` -> ``(B,)``."""
    if how == "probability":
        return text_probability
    if how == "code" and map_maxima.shape[1] == 2:
        return 0.5 * (text_probability + (2 * map_maxima[:, 0] + map_maxima[:, 1]) / 3)
    return 0.5 * (text_probability + map_maxima.mean(dim=1))


def forward_batch(learner: PromptLearner, tokens: list[torch.Tensor], image: torch.Tensor, config: ScoreConfig) -> BatchOutputs:
    """Static maps, DAP (when the learner has it), image probability and score of one batch.

    Args:
        tokens: per level ``(B, P, D)`` projected, normalised patch tokens; DAP reads the last level.
        image: ``(B, D)`` normalised image embeddings.
    """
    normal = learner.encode_normal()
    abnormal = learner.encode_abnormal()
    text = text_pair(normal, abnormal)
    static = [patch_probabilities(level, text, config.temperature) for level in tokens]
    prior = bias = None
    if learner.config.prior:
        chosen = select_prior_patches(tokens[-1], static[-1][..., 1], learner.config.prior_patches, config.prior_selection)
        bias = learner.prior(chosen)
        text = text_pair(normal, learner.encode_abnormal(bias))
        prior = [patch_probabilities(level, text, config.temperature) for level in tokens]
    logits = torch.einsum("bd,bcd->bc", image, text.expand(len(image), -1, -1)) / config.temperature
    probability = logits.softmax(dim=-1)[:, 1]
    maps = [static] if prior is None else [static, prior]
    maxima = torch.stack([patch_anomaly(levels).max(dim=1).values for levels in maps], dim=1)
    return BatchOutputs(static, prior, bias, abnormal, logits, probability, maxima, image_score(probability, maxima, config.image_score))


def anomaly_maps(outputs: BatchOutputs, size: int) -> torch.Tensor:
    """Eq. 11 before smoothing: ``(B, size, size)``, the mean over maps (and levels) of the upsampled patch anomaly."""
    return torch.stack([upsample(square_grid(patch_anomaly(levels)[..., None]), size)[:, 0] for levels in outputs.maps]).mean(dim=0)
