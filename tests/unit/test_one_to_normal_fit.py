"""The text maps' fit: trained on an auxiliary dataset's labels, S_text then separates its anomalies."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from fsad.features.types import FeatureBatch
from fsad.fusion.score_weights import auroc
from fsad.scorers.base import FitContext, TrainingCategory
from fsad.scorers.one_to_normal.fit import fit
from fsad.scorers.one_to_normal.torch_model import TextMaps, image_score, text_probabilities

PARAMS = {
    "layers": [1, 2], "prompt_preset": "paper", "temperature": 0.1, "text_normalisation": None, "text_map_epochs": 30,
    "text_map_lr": 1e-2, "text_map_batch_size": 8, "text_map_focal_gamma": 2.0,
}


def _category(name: str, seed: int) -> tuple[TrainingCategory, dict[int, torch.Tensor], np.ndarray]:
    """16 images of 4 positions x 6 channels; anomalous images carry a bump on channel 0 at one position."""
    gen = torch.Generator().manual_seed(seed)
    labels = np.array([0] * 10 + [1] * 6)
    layers = {l: torch.randn(16, 4, 6, generator=gen) * 0.3 for l in (1, 2)}
    for l in layers:
        layers[l][labels == 1, 2, 0] += 3.0
    ids = [f"{name}{i}" for i in range(16)]
    manifest = pd.DataFrame({"image_id": ids, "label": labels}).set_index("image_id", drop=False)
    rows = {i: n for n, i in enumerate(ids)}
    features = lambda wanted: FeatureBatch(list(wanted), torch.zeros(len(wanted), 2), torch.zeros(len(wanted), 4, 6), {}, 2,  # noqa: E731
                                           {l: v[[rows[i] for i in wanted]] for l, v in layers.items()})
    return TrainingCategory("aux", name, ids, manifest, features, name), layers, labels


def test_the_fit_lowers_its_loss_and_its_maps_separate_the_auxiliary_anomalies():
    categories = [_category("bottle", 0), _category("screw", 1)]
    encode = lambda prompts: torch.stack([torch.tensor([1.0, 0.0, 0.2]) if not any(w in p for w in ("damaged", " with ")) else torch.tensor([0.0, 1.0, 0.2]) for p in prompts])  # noqa: E731
    ctx = FitContext(PARAMS, [c for c, _, _ in categories], None, encode, torch.device("cpu"), seed=0)
    result = fit(ctx)
    assert len(result.losses) == 30 and result.losses[-1] < 0.5 * result.losses[0]
    assert result.details == {"levels": [1, 2], "images": 32, "anomalous": 12}
    maps = TextMaps.from_tensors(result.tensors)
    text = torch.tensor([[1.0, 0.0, 0.2], [0.0, 1.0, 0.2]])
    for _, layers, labels in categories:
        with torch.no_grad():
            s_text = image_score(torch.stack([text_probabilities(maps(layers[l], l), text, 0.1) for l in (1, 2)], dim=1))
        assert auroc(s_text.numpy(), labels) == 1.0


def test_a_training_set_of_one_class_is_refused():
    category, _, _ = _category("bottle", 0)
    category.manifest["label"] = 0
    ctx = FitContext(PARAMS, [category], None, lambda prompts: torch.ones(len(prompts), 3), torch.device("cpu"), seed=0)
    with pytest.raises(ValueError, match="normal and anomalous"):
        fit(ctx)
