"""The winclip scorer glue: params, zero-/few-shot switch, sub-score columns, maps at map_size."""

import zlib

import numpy as np
import pandas as pd

import fsad.scorers.base as scorer_base
import pytest
import torch

from fsad.features.types import FeatureBatch
from fsad.data.splits import Split
from fsad.scorers.base import ScoringContext
from fsad.scorers.method import resolve
from fsad.scorers.registry import method_params
from fsad.scorers.winclip import scorer as winclip_scorer
from fsad.scorers.winclip.method import METHOD
from fsad.text.prompt_ensembles import ANOMALIB_TEMPLATES, PAPER_TEMPLATES

GRID, DIM, WIDTH = 5, 6, 8


def features_of(ids, window_sizes=(2, 3)):
    """Deterministic random features per image id, so any subset is consistent."""
    rows = []
    for image_id in ids:
        gen = torch.Generator().manual_seed(zlib.crc32(image_id.encode()))
        rows.append(
            FeatureBatch(
                [image_id],
                torch.randn(1, DIM, generator=gen),
                torch.randn(1, GRID * GRID, WIDTH, generator=gen),
                {k: torch.randn(1, (GRID - k + 1) ** 2, DIM, generator=gen) for k in window_sizes},
                GRID,
            )
        )
    return FeatureBatch(
        list(ids),
        torch.cat([r.image_embeddings for r in rows]),
        torch.cat([r.patch_tokens for r in rows]),
        {k: torch.cat([r.windows[k] for r in rows]) for k in window_sizes},
        GRID,
    )


def encode_text(prompts):
    gen = torch.Generator().manual_seed(len(prompts))
    return torch.randn(len(prompts), DIM, generator=gen) + torch.tensor([len(p) % 3 for p in prompts]).unsqueeze(1)


def make_context(normal_refs, n_test=5, params=None, window_sizes=(2, 3)):
    test = [f"test{i}" for i in range(n_test)]
    split = Split("d", "metal_nut", "k1", 0, 0, normal_refs, [], [], test)
    return ScoringContext(
        split=split,
        manifest=pd.DataFrame(),
        features=lambda ids: features_of(ids, window_sizes),
        text_encoder=encode_text,
        class_name="metal nut",
        params=method_params(METHOD, params or {}),
        map_size=20,
        device=torch.device("cpu"),
        seed=0,
    )


def test_the_method_declaration_names_this_score_step_and_its_windows():
    assert resolve(METHOD.score) is winclip_scorer.score
    assert METHOD.features(method_params(METHOD, {"window_sizes": [2, 5]})).window_sizes == (2, 5)
    assert METHOD.fit is None and METHOD.report is None


def test_zero_shot_split_gives_the_zero_shot_image_score_and_maps_at_map_size():
    result = winclip_scorer.score(make_context([]))
    assert list(result.scores.columns) == ["image_id", "score", "zero_shot"]
    assert (result.scores["score"] == result.scores["zero_shot"]).all()
    assert result.maps.shape == (5, 20, 20)


def test_few_shot_split_adds_one_memory_sub_score_per_scale():
    result = winclip_scorer.score(make_context(["ref0", "ref1"]))
    assert list(result.scores.columns) == ["image_id", "score", "zero_shot", "memory_patch", "memory_w2", "memory_w3"]
    assert list(result.scores["image_id"]) == [f"test{i}" for i in range(5)]
    assert result.scores.notna().all().all()


def test_scores_do_not_depend_on_how_test_images_are_chunked(monkeypatch):
    whole = winclip_scorer.score(make_context(["ref0"], n_test=7))
    monkeypatch.setattr(scorer_base, "IMAGES_PER_STEP", 3)
    chunked = winclip_scorer.score(make_context(["ref0"], n_test=7))
    pd.testing.assert_frame_equal(whole.scores, chunked.scores, atol=1e-6)
    assert abs(whole.maps - chunked.maps).max() < 1e-6


def hand_zero_shot(image_id, templates, temperature, normalised):
    """Zero-shot score by hand (float64): every state in every template for "metal nut", the class embeddings
    averaged (mala-lab: normalise, mean, normalise; anomalib: plain mean), then the anomalous softmax
    probability of the cosines over ``temperature``."""
    normal_states = ["{}", "flawless {}", "perfect {}", "unblemished {}", "{} without flaw", "{} without defect", "{} without damage"]
    anomalous_states = ["damaged {}", "{} with flaw", "{} with defect", "{} with damage"]
    classes = []
    for states in (normal_states, anomalous_states):
        embeddings = encode_text([t.format(s.format("metal nut")) for s in states for t in templates]).double()
        if normalised:
            embeddings = embeddings / embeddings.norm(dim=1, keepdim=True)
        mean = embeddings.mean(dim=0)
        classes.append(mean / mean.norm())
    image = features_of([image_id]).image_embeddings[0].double()
    cosines = torch.stack([image @ c for c in classes]) / image.norm()
    return torch.softmax(cosines / temperature, dim=0)[1].item()


@pytest.mark.parametrize(
    "params, preset, temperature, normalised",
    [
        ({}, "paper", 0.01, True),  # paper: CLIP's logit scale 100 (mala-lab, caoyunkang), normalised mean
        ({"prompt_preset": "anomalib"}, "anomalib", 0.07, False),  # anomalib's TEMPERATURE and raw mean
        ({"temperature": 0.07}, "paper", 0.07, True),
        ({"prompt_preset": "anomalib", "temperature": 0.01}, "anomalib", 0.01, False),
        ({"text_normalisation": "raw_mean"}, "paper", 0.01, False),
        ({"prompt_preset": "anomalib", "text_normalisation": "normalised_mean"}, "anomalib", 0.07, True),
    ],
)
def test_zero_shot_scores_follow_the_preset_its_temperature_and_averaging_by_hand(params, preset, temperature, normalised):
    templates = {"paper": PAPER_TEMPLATES, "anomalib": ANOMALIB_TEMPLATES}[preset]
    assert len(templates) == {"paper": 22, "anomalib": 21}[preset]
    scores = winclip_scorer.score(make_context([], params=params)).scores
    expected = [hand_zero_shot(image_id, templates, temperature, normalised) for image_id in scores["image_id"]]
    assert 0.05 < np.std(expected)  # the images differ, so a wrong temperature or average shows
    np.testing.assert_allclose(scores["zero_shot"], expected, rtol=1e-4, atol=1e-6)


def test_window_sizes_change_the_maps():
    base = winclip_scorer.score(make_context([]))
    assert abs(base.maps - winclip_scorer.score(make_context([], params={"window_sizes": [2]})).maps).max() > 1e-3


def test_window_size_missing_from_the_cache_is_a_clear_error():
    with pytest.raises(ValueError, match=r"window sizes \[3\].*backbone's window_sizes"):
        winclip_scorer.score(make_context(["ref0"], window_sizes=(2,)))
