"""One-to-Normal's triplet contrastive anomaly inference (Li et al., NeurIPS 2024, section 3.4), pure torch.

For each feature level ``l`` (the patch tokens of a chosen block, ``(N, P, W)``):

- S_P (eq. 4): ``1 - cos`` between the query's and its personalized image's tokens at the same position;
- S_N (eq. 5): ``min over the memory of 1 - cos``, the memory being every position of every anomaly-free pool
  image at that level (a patch-level memory bank, as WinCLIP+ and PatchCore build theirs);
- S_text (eq. 6): the anomalous column of ``softmax(cos(F'_l, F_text) / temperature)``, ``F'_l`` the query's tokens
  through the level's learned linear map, ``F_text`` the normal and anomalous prompt embeddings.

Each branch's image score is the mean over levels of the max over positions; its map is the mean over levels. The
final score is ``A = S_P + alpha S_N + beta S_text`` (eq. 7), the final map the same sum of maps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import combinations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

# Query images per memory comparison: bounds the (images x positions, memory entries) similarity matrix.
MEMORY_CHUNK = 8
BRANCHES = ("s_p", "s_n", "s_text")


def position_distances(query: torch.Tensor, personalized: torch.Tensor) -> torch.Tensor:
    """``1 - cos`` at each position: ``(N, P, W)`` and ``(N, P, W)`` -> ``(N, P)``."""
    return 1 - F.cosine_similarity(query.float(), personalized.float(), dim=-1)


def build_memory(tokens: torch.Tensor) -> torch.Tensor:
    """``(K, P, W)`` tokens of ``K`` pool images -> ``(K * P, W)`` L2-normalised memory entries."""
    return F.normalize(tokens.reshape(-1, tokens.shape[-1]).float(), dim=-1)


def memory_distances(query: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
    """``min_m (1 - cos(q, m))`` per position: ``(N, P, W)`` and ``(M, W)`` normalised -> ``(N, P)``."""
    out = []
    for start in range(0, query.shape[0], MEMORY_CHUNK):
        chunk = F.normalize(query[start : start + MEMORY_CHUNK].float(), dim=-1)
        out.append(1 - (chunk @ memory.T).amax(dim=-1))
    return torch.cat(out)


class TextMaps(nn.Module):
    """One linear map per level from the visual token width ``W`` to the text embedding width ``D`` (eq. 6's F')."""

    def __init__(self, levels: list[int], width: int, text_width: int):
        super().__init__()
        self.levels = list(levels)
        self.maps = nn.ModuleDict({str(level): nn.Linear(width, text_width) for level in self.levels})

    def forward(self, tokens: torch.Tensor, level: int) -> torch.Tensor:
        """``(N, P, W)`` -> ``(N, P, D)``."""
        return self.maps[str(level)](tokens.float())

    def tensors(self) -> dict[str, torch.Tensor]:
        """``text_map.{level}.weight`` ``(D, W)`` and ``text_map.{level}.bias`` ``(D,)`` for ``model.safetensors``."""
        return {f"text_map.{name}": value.detach() for name, value in self.maps.state_dict().items()}

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor]) -> "TextMaps":
        levels = sorted({int(name.split(".")[1]) for name in tensors if name.startswith("text_map.")})
        if not levels:
            raise ValueError("the fitted model holds no text_map.* tensors; rerun the one_to_normal fit")
        text_width, width = tensors[f"text_map.{levels[0]}.weight"].shape
        maps = cls(levels, width, text_width)
        maps.maps.load_state_dict({name.removeprefix("text_map."): value for name, value in tensors.items() if name.startswith("text_map.")})
        return maps


def text_margins(mapped: torch.Tensor, text: torch.Tensor, temperature: float) -> torch.Tensor:
    """Anomalous minus normal logit per position: ``(N, P, D)`` mapped tokens and ``(2, D)`` [normal, anomalous] -> ``(N, P)``."""
    logits = F.normalize(mapped, dim=-1) @ F.normalize(text.float(), dim=-1).T / temperature
    return logits[..., 1] - logits[..., 0]


def text_probabilities(mapped: torch.Tensor, text: torch.Tensor, temperature: float) -> torch.Tensor:
    """Anomalous column of the two-class softmax per position, ``(N, P)`` (= the sigmoid of :func:`text_margins`)."""
    return torch.sigmoid(text_margins(mapped, text, temperature))


def image_score(per_level: torch.Tensor) -> torch.Tensor:
    """``(N, L, P)`` -> ``(N,)``: mean over levels of the max over positions (eqs. 4-6)."""
    return per_level.amax(dim=-1).mean(dim=-1)


@dataclass
class TripletScores:
    """Per-branch image scores ``(N,)`` and maps ``(N, P)`` (level means), keyed by :data:`BRANCHES`."""

    scores: dict[str, torch.Tensor]
    maps: dict[str, torch.Tensor]


def triplet_scores(
    query: dict[int, torch.Tensor],
    personalized: dict[int, torch.Tensor],
    memory: dict[int, torch.Tensor],
    text_maps: TextMaps,
    text: torch.Tensor,
    temperature: float,
) -> TripletScores:
    """The three branches on the levels of ``query``.

    Args:
        query, personalized: level -> ``(N, P, W)`` tokens of the test images and their personalized images.
        memory: level -> ``(M, W)`` normalised pool memory (:func:`build_memory`).
        text: ``(2, D)`` normal and anomalous prompt embeddings.
    """
    levels = sorted(query)
    per_level = {
        "s_p": torch.stack([position_distances(query[l], personalized[l]) for l in levels], dim=1),
        "s_n": torch.stack([memory_distances(query[l], memory[l]) for l in levels], dim=1),
        "s_text": torch.stack([text_probabilities(text_maps(query[l], l), text, temperature) for l in levels], dim=1),
    }
    return TripletScores({k: image_score(v) for k, v in per_level.items()}, {k: v.mean(dim=1) for k, v in per_level.items()})


def combine(values: dict[str, torch.Tensor], alpha: float, beta: float, branches: tuple[str, ...] = BRANCHES) -> torch.Tensor:
    """``S_P + alpha S_N + beta S_text`` over the ``branches`` kept (eq. 7; a subset for the branch ablation)."""
    weights = {"s_p": 1.0, "s_n": alpha, "s_text": beta}
    return sum(weights[b] * values[b] for b in branches)


def branch_pair_columns(values: dict[str, np.ndarray], alpha: float, beta: float) -> dict[str, np.ndarray]:
    """The score of each pair of branches with the instance's weights, as score-file columns ``branches:s_p+s_n``
    (the branch ablation of paper Table 4: each branch alone is its own column, all three the ``score``)."""
    return {f"branches:{'+'.join(pair)}": combine(values, alpha, beta, pair) for pair in combinations(BRANCHES, 2)}


def text_score_focal_loss(margins: torch.Tensor, labels: torch.Tensor, gamma: float) -> torch.Tensor:
    """Binary focal loss (alpha 1, as InCTRL's ``BinaryFocalLoss``; gamma 0 is cross-entropy) of the S_text image score.

    The score ``s = mean_l max_p sigmoid(z)`` is a mean of sigmoids of each level's largest margin ``z``, so ``log s``
    and ``log(1 - s)`` are log-sum-exps of log-sigmoids: exact and with gradients where the probabilities saturate
    (at the paper's temperature 0.01 they are 0 or 1 in float32, and a clamped probability would learn nothing).

    Args:
        margins: ``(N, L, P)`` :func:`text_margins` per level.
        labels: ``(N,)`` 0 (normal) or 1 (anomalous).
    """
    best = margins.amax(dim=-1)
    log_levels = math.log(best.shape[1])
    log_score = torch.logsumexp(-F.softplus(-best), dim=1) - log_levels
    log_complement = torch.logsumexp(-F.softplus(best), dim=1) - log_levels
    labels = labels.float()
    bce = -(labels * log_score + (1 - labels) * log_complement)
    return ((1 - torch.exp(-bce)) ** gamma * bce).mean()
