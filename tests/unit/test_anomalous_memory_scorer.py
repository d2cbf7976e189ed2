"""The anomalous_memory scorer glue: mask handling, columns, validated weights, maps, clear errors."""

import zlib

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from sklearn.metrics import roc_auc_score

from fsad.data.splits import Split
from fsad.features.types import FeatureBatch
from fsad.fusion import validation
from fsad.fusion.validation import validate_weights
from fsad.scorers.anomalous_memory import scorer as anomalous_scorer
from fsad.scorers.anomalous_memory.method import METHOD
from fsad.scorers.base import ScoringContext
from fsad.scorers.method import resolve
from fsad.scorers.registry import method_params

from .test_weight_search_no_leak import expected_choice

GRID, DIM, WIDTH, WINDOWS = 5, 6, 8, (2, 3)
SUB_SCORES = ["zero_shot", "reference_patch", "reference_w2", "reference_w3", "anomalous_patch", "anomalous_w2", "anomalous_w3"]


def features_of(keys):
    """Deterministic random features per key, so any subset is consistent."""
    rows = []
    for key in keys:
        gen = torch.Generator().manual_seed(zlib.crc32(key.encode()))
        rows.append((torch.randn(1, DIM, generator=gen), torch.randn(1, GRID * GRID, WIDTH, generator=gen),
                     {k: torch.randn(1, (GRID - k + 1) ** 2, DIM, generator=gen) for k in WINDOWS}))
    return FeatureBatch(list(keys), torch.cat([r[0] for r in rows]), torch.cat([r[1] for r in rows]),
                        {k: torch.cat([r[2][k] for r in rows]) for k in WINDOWS}, GRID)


def encode_images(images):
    """Stands in for the backbone: features keyed by the pixels' checksum."""
    return features_of([str(zlib.crc32(np.array(img).tobytes())) for img in images])


def encode_text(prompts):
    gen = torch.Generator().manual_seed(len(prompts))
    return torch.randn(len(prompts), DIM, generator=gen) + torch.tensor([len(p) % 3 for p in prompts]).unsqueeze(1)


@pytest.fixture
def manifest(tmp_path):
    rows = []
    rng = np.random.default_rng(0)
    for name, label, with_mask in [("anomalous", 1, True), ("valid", 0, False)] + [(f"test{i}", i % 2, False) for i in range(6)]:
        image_path = tmp_path / f"{name}.png"
        Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(image_path)
        mask_path = ""
        if with_mask:
            mask = np.zeros((40, 40), dtype=np.uint8)
            mask[0:16, 0:16] = 255
            mask_path = str(tmp_path / f"{name}_mask.png")
            Image.fromarray(mask).save(mask_path)
        rows.append({"image_id": name, "label": label, "image_path": str(image_path), "mask_path": mask_path})
    return pd.DataFrame(rows).set_index("image_id", drop=False)


def make_context(manifest, params=None, encode=encode_images, validation=("valid",)):
    test = [f"test{i}" for i in range(6)]
    split = Split("d", "pcb1", "a1", 0, 11, [], ["anomalous"], list(validation), test)
    return ScoringContext(
        split=split, manifest=manifest, features=features_of, text_encoder=encode_text, class_name="pcb1",
        params=method_params(METHOD, {"window_sizes": list(WINDOWS), "n_draws": 20, **(params or {})}), map_size=12,
        device=torch.device("cpu"), seed=11, encode_images=encode,
    )


def test_the_method_declaration_names_this_score_step_masks_and_its_windows():
    assert resolve(METHOD.score) is anomalous_scorer.score
    assert METHOD.needs.masks and METHOD.needs.anomalous_shots == 1
    params = method_params(METHOD, {})
    assert METHOD.features(params).window_sizes == (2, 3, 7)
    assert METHOD.needs.min_validation_normals(params) == 1
    assert METHOD.needs.min_validation_normals(method_params(METHOD, {"distributions": []})) == 0
    # report-only parameters never reach (and so never rerun) a score job
    assert "baseline_scorer" not in METHOD.score_params(params) and "window_sizes" in METHOD.score_params(params)


def test_scores_carry_every_sub_score_the_baseline_and_each_validated_total(manifest):
    result = anomalous_scorer.score(make_context(manifest))
    frame = result.scores
    assert list(frame.columns) == ["image_id", "score", *SUB_SCORES, "score_baseline", "score_uniform", "score_normal", "score_student_t"]
    assert list(frame["image_id"]) == [f"test{i}" for i in range(6)]
    assert np.allclose(frame["score"], frame["score_baseline"])
    # the paper's baseline: a third for the zero-shot score, a third shared by the 3 reference scales, a third by the 3 anomalous ones
    hand_baseline = np.array([1 / 3] + [1 / 9] * 6)
    assert np.allclose(frame["score_baseline"], frame[SUB_SCORES].to_numpy() @ hand_baseline, atol=1e-6)
    assert result.maps.shape == (6, 12, 12)


def fixed_draws(n: int, dim: int) -> np.ndarray:
    draws = np.random.default_rng(11).uniform(size=(n, dim))
    return draws / draws.sum(axis=1, keepdims=True)


@pytest.fixture
def searched(monkeypatch):
    """Fixed weight draws, and the validation set the scorer hands to the weight search (recorded per call)."""
    draws = fixed_draws(40, len(SUB_SCORES))
    monkeypatch.setattr(validation, "draw_weights", lambda distribution, n, dim, rng: draws[:n])
    calls = []

    def recording(validation_scores, validation_labels, *args, **kwargs):
        calls.append((validation_scores, validation_labels))
        return validate_weights(validation_scores, validation_labels, *args, **kwargs)

    monkeypatch.setattr(anomalous_scorer, "validate_weights", recording)
    return draws, calls


def test_score_weights_score_with_the_draw_that_separates_the_augmented_validation_set_best(manifest, searched):
    draws, calls = searched
    result = anomalous_scorer.score(make_context(manifest, {"score_weights": "uniform", "distributions": ["uniform"], "n_draws": 40}))
    [(validation_scores, validation_labels)] = calls
    # 5 augmentations of the anomalous reference, 5 of the validation normal
    assert sorted(validation_labels) == [0] * 5 + [1] * 5 and validation_scores.shape == (10, len(SUB_SCORES))
    chosen, _ = expected_choice(validation_scores, validation_labels, draws)
    assert np.allclose(result.scores["score"], result.scores[SUB_SCORES].to_numpy() @ draws[chosen], atol=1e-5)
    assert np.allclose(result.scores["score"], result.scores["score_uniform"])
    report = result.extra["validation"]
    assert report["n_validation"] == 10 and report["n_validation_anomalous"] == 5
    assert report["distributions"]["uniform"]["draw_index"] == chosen
    assert report["validation_sub_score_auroc"] == {
        name: pytest.approx(roc_auc_score(validation_labels, validation_scores[:, i]), abs=1e-6) for i, name in enumerate(SUB_SCORES)
    }
    assert result.extra["memory"]["patch"]["n_anomalous"] > 0


def test_the_test_labels_never_reach_the_chosen_weights(manifest, searched):
    _, calls = searched
    params = {"score_weights": "uniform", "distributions": ["uniform"], "n_draws": 40}
    first = anomalous_scorer.score(make_context(manifest, params))
    flipped = manifest.copy()
    tests = [f"test{i}" for i in range(6)]
    flipped.loc[tests, "label"] = 1 - flipped.loc[tests, "label"]
    second = anomalous_scorer.score(make_context(flipped, params))
    # the search sees the same validation set, whatever the test labels say ...
    (scores_before, labels_before), (scores_after, labels_after) = calls
    assert np.array_equal(scores_before, scores_after) and np.array_equal(labels_before, labels_after)
    pd.testing.assert_frame_equal(first.scores, second.scores)
    before, after = first.extra["validation"]["distributions"]["uniform"], second.extra["validation"]["distributions"]["uniform"]
    assert before["draw_index"] == after["draw_index"]
    # ... while the oracle, which reads them, sees labels turned upside down
    assert after["test_auroc_per_draw"] == pytest.approx([1 - a for a in before["test_auroc_per_draw"]], abs=1e-6)


def test_scoring_is_reproducible_and_runs_under_inference_mode_as_the_orchestration_calls_it(manifest):
    first = anomalous_scorer.score(make_context(manifest))
    with torch.inference_mode():
        second = anomalous_scorer.score(make_context(manifest))
    pd.testing.assert_frame_equal(first.scores, second.scores)
    assert first.extra == second.extra


def test_a_reference_without_mask_stops_the_scorer_with_the_fix(manifest):
    manifest.loc["anomalous", "mask_path"] = ""
    with pytest.raises(ValueError, match="no defect masks: drop it from scorers.anomalous_memory.datasets"):
        anomalous_scorer.score(make_context(manifest))


def test_validation_needs_an_encoder_and_a_validation_normal(manifest):
    with pytest.raises(ValueError, match="encode"):
        anomalous_scorer.score(make_context(manifest, encode=None))
    with pytest.raises(ValueError, match="validation_normals"):
        anomalous_scorer.score(make_context(manifest, validation=()))
    baseline_only = anomalous_scorer.score(make_context(manifest, {"distributions": []}, encode=None, validation=()))
    assert baseline_only.extra["validation"] is None
    with pytest.raises(ValueError, match="score_weights is 'normal'"):
        anomalous_scorer.score(make_context(manifest, {"score_weights": "normal", "distributions": ["uniform"]}))


def test_an_empty_reference_mask_names_the_mask_file(manifest):
    Image.fromarray(np.zeros((40, 40), dtype=np.uint8)).save(manifest.loc["anomalous", "mask_path"])
    with pytest.raises(ValueError, match="anomalous_mask.png: the mask .* marks no defect pixel"):
        anomalous_scorer.score(make_context(manifest))
