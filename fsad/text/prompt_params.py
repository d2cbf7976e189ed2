"""The prompt-ensemble parameters (``prompt_params.schema.yaml`` beside this module, included by the methods that
score with WinCLIP's class text embeddings) turned into what those methods read: class embeddings and a temperature."""

from __future__ import annotations

from typing import Any, Callable

import torch

from fsad.text.prompt_ensembles import preset_temperature, text_embeddings


def prompt_temperature(params: dict[str, Any]) -> float:
    """The softmax temperature of the text scores: ``temperature``, or the ``prompt_preset``'s own when it is null."""
    return preset_temperature(params["prompt_preset"], params["temperature"])


def class_text_embeddings(
    params: dict[str, Any], encode_text: Callable[[list[str]], torch.Tensor], class_name: str, device: torch.device
) -> torch.Tensor:
    """``(2, D)`` normal and anomalous class embeddings of ``class_name`` on ``device``, from the ensemble of
    ``prompt_preset`` averaged as ``text_normalisation`` says (:func:`~fsad.text.prompt_ensembles.text_embeddings`)."""
    return text_embeddings(encode_text, class_name, params["prompt_preset"], params["text_normalisation"]).to(device)
