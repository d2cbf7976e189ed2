"""WinCLIP's compositional prompt ensembles and their averaged text embeddings.

Two presets:

- ``"paper"``: the WinCLIP paper's list (mala-lab/WinCLIP ``main.py``): 7 normal states, 4 anomalous
  states, 22 templates. Averaged mala-lab style by default (``"normalised_mean"``): each prompt
  embedding is L2-normalised, the normalised embeddings are averaged, the mean is normalised again.
- ``"anomalib"``: anomalib's ``prompting.py`` exactly, 21 templates including its duplicated
  ``"a jpeg corrupted photo of the {}."`` and without ``"a cropped photo of a {}."``. Averaged as
  anomalib's ``WinClipModel._collect_text_embeddings`` does (``"raw_mean"``): the mean of the
  un-normalised embeddings.

Either averaging can be chosen for either preset with ``normalisation``.

Each preset also carries the softmax temperature of its source, which sets how much the zero-shot score weighs
against memory scores when they are added: ``paper`` 0.01 (CLIP's logit scale 100, as mala-lab/WinCLIP and
caoyunkang/WinClip), ``anomalib`` 0.07 (anomalib's ``TEMPERATURE``, also zqhang/WinCLIP-pytorch).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

NORMAL_STATES = (
    "{}",
    "flawless {}",
    "perfect {}",
    "unblemished {}",
    "{} without flaw",
    "{} without defect",
    "{} without damage",
)
ANOMALOUS_STATES = ("damaged {}", "{} with flaw", "{} with defect", "{} with damage")

PAPER_TEMPLATES = (
    "a cropped photo of the {}.",
    "a cropped photo of a {}.",
    "a close-up photo of a {}.",
    "a close-up photo of the {}.",
    "a bright photo of a {}.",
    "a bright photo of the {}.",
    "a dark photo of a {}.",
    "a dark photo of the {}.",
    "a jpeg corrupted photo of a {}.",
    "a jpeg corrupted photo of the {}.",
    "a blurry photo of the {}.",
    "a blurry photo of a {}.",
    "a photo of the {}.",
    "a photo of a {}.",
    "a photo of a small {}.",
    "a photo of the small {}.",
    "a photo of a large {}.",
    "a photo of the large {}.",
    "a photo of a {} for visual inspection.",
    "a photo of the {} for visual inspection.",
    "a photo of a {} for anomaly detection.",
    "a photo of the {} for anomaly detection.",
)

# anomalib 2.x prompting.TEMPLATES, in its order; the duplicate is kept on purpose because it weights
# that template twice in anomalib's mean.
ANOMALIB_TEMPLATES = (
    "a cropped photo of the {}.",
    "a close-up photo of a {}.",
    "a close-up photo of the {}.",
    "a bright photo of a {}.",
    "a bright photo of the {}.",
    "a dark photo of the {}.",
    "a dark photo of a {}.",
    "a jpeg corrupted photo of the {}.",
    "a jpeg corrupted photo of the {}.",
    "a blurry photo of the {}.",
    "a blurry photo of a {}.",
    "a photo of a {}.",
    "a photo of the {}.",
    "a photo of a small {}.",
    "a photo of the small {}.",
    "a photo of a large {}.",
    "a photo of the large {}.",
    "a photo of the {} for visual inspection.",
    "a photo of a {} for visual inspection.",
    "a photo of the {} for anomaly detection.",
    "a photo of a {} for anomaly detection.",
)

NORMALISATIONS = ("raw_mean", "normalised_mean")


@dataclass(frozen=True)
class PromptPreset:
    """A prompt ensemble: every template filled with every state, and how embeddings are averaged."""

    normal_states: tuple[str, ...]
    anomalous_states: tuple[str, ...]
    templates: tuple[str, ...]
    normalisation: str
    temperature: float


PRESETS: dict[str, PromptPreset] = {
    "paper": PromptPreset(NORMAL_STATES, ANOMALOUS_STATES, PAPER_TEMPLATES, "normalised_mean", 0.01),
    "anomalib": PromptPreset(NORMAL_STATES, ANOMALOUS_STATES, ANOMALIB_TEMPLATES, "raw_mean", 0.07),
}


def get_preset(name: str) -> PromptPreset:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown prompt_preset {name!r}; use one of {sorted(PRESETS)}") from None


def preset_temperature(preset: str, temperature: float | None = None) -> float:
    """``temperature`` when given, else the preset's own."""
    return float(temperature) if temperature is not None else get_preset(preset).temperature


def prompt_ensemble(class_name: str, preset: str = "paper") -> tuple[list[str], list[str]]:
    """Normal and anomalous prompts for ``class_name``, state-major (all templates of state 1, then state 2, ...)."""
    spec = get_preset(preset)

    def fill(states: tuple[str, ...]) -> list[str]:
        return [template.format(state.format(class_name)) for state in states for template in spec.templates]

    return fill(spec.normal_states), fill(spec.anomalous_states)


def average_embeddings(embeddings: torch.Tensor, normalisation: str) -> torch.Tensor:
    """Average ``(M, D)`` prompt embeddings into one ``(D,)`` class embedding.

    ``"raw_mean"`` is the plain mean (anomalib); ``"normalised_mean"`` normalises each prompt embedding,
    averages, and normalises the mean (mala-lab WinCLIP).
    """
    if normalisation == "raw_mean":
        return embeddings.mean(dim=0)
    if normalisation == "normalised_mean":
        return torch.nn.functional.normalize(torch.nn.functional.normalize(embeddings, dim=-1).mean(dim=0), dim=-1)
    raise ValueError(f"unknown text_normalisation {normalisation!r}; use one of {NORMALISATIONS}")


def text_embeddings(
    encode_text: Callable[[list[str]], torch.Tensor],
    class_name: str,
    preset: str = "paper",
    normalisation: str | None = None,
) -> torch.Tensor:
    """Class embeddings of the prompt ensemble.

    Args:
        encode_text: maps prompts to ``(M, D)`` un-normalised text embeddings (``Backbone.encode_text``).
        class_name: the object name put into the prompts.
        preset: ``"paper"`` or ``"anomalib"``.
        normalisation: ``"raw_mean"`` or ``"normalised_mean"``; ``None`` takes the preset's own.

    Returns:
        ``(2, D)`` float32: row 0 the normal class, row 1 the anomalous class.
    """
    normalisation = normalisation or get_preset(preset).normalisation
    normal_prompts, anomalous_prompts = prompt_ensemble(class_name, preset)
    # Encoded apart, as anomalib does, so the raw means match its numbers bit for bit on CPU.
    normal = average_embeddings(encode_text(normal_prompts).float(), normalisation)
    anomalous = average_embeddings(encode_text(anomalous_prompts).float(), normalisation)
    return torch.stack([normal, anomalous])
