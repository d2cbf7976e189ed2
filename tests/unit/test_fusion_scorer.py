"""The fusion scorer: normalisation on the validation set, weights by the validated search, fused scores and maps."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from fsad.data.splits import Split
from fsad.scorers.base import MemberScores, ScoringContext
from fsad.scorers.fusion.fusion_model import Normaliser
from fsad.scorers.fusion.scorer import score
from fsad.seeding import derive_seed

TEST_IDS = ["t0", "t1", "t2", "t3"]
TEST_LABELS = np.array([0, 1, 0, 1])
VALIDATION_IDS = ["v0", "v1", "v2", "v3"]
VALIDATION_LABELS = np.array([0, 0, 1, 1])


def member(validation: list[float], test: list[float], side: int = 2, offset: float = 0.0) -> MemberScores:
    validation_maps = np.stack([np.full((side, side), v + offset) for v in validation]).astype(np.float32)
    validation_maps[:, 0, 0] += 1.0  # a spread within each map, so that the map normaliser has a scale
    test_maps = np.stack([np.full((side, side), v + offset) for v in test]).astype(np.float32)
    return MemberScores(
        test=pd.DataFrame({"image_id": TEST_IDS, "label": TEST_LABELS, "score": test}),
        test_maps=test_maps,
        validation_ids=VALIDATION_IDS,
        validation_labels=VALIDATION_LABELS,
        validation_scores=np.array(validation, dtype=float),
        validation_maps=validation_maps,
    )


def context(scored: dict[str, MemberScores], test_labels: np.ndarray = TEST_LABELS, **params) -> ScoringContext:
    split = Split("d", "c", "k1", 0, 123, ["r0"], [], ["n0"], TEST_IDS)
    manifest = pd.DataFrame({"image_id": TEST_IDS, "label": test_labels}).set_index("image_id", drop=False)
    defaults = {"members": list(scored), "n_draws": 50, "distributions": ["uniform"], "score_weights": "uniform"}
    return ScoringContext(
        split=split, manifest=manifest, features=None, text_encoder=None, class_name="c", params=defaults | params,
        map_size=2, device=torch.device("cpu"), seed=123, members=scored,
    )


def uniform_draws(seed: int, n: int, dim: int) -> np.ndarray:
    """The search's uniform draws, drawn here from the documented seed rule (derive_seed(seed, "weights", "uniform"))."""
    draws = np.random.default_rng(derive_seed(seed, "weights", "uniform")).uniform(0.0, 1.0, size=(n, dim))
    return draws / draws.sum(axis=1, keepdims=True)


def test_normaliser_is_the_z_score_of_the_validation_values() -> None:
    normaliser = Normaliser.fit(np.array([0.0, 2.0]), "m")
    assert (normaliser.loc, normaliser.scale) == (1.0, 1.0)
    assert normaliser(np.array([3.0, -1.0])) == pytest.approx([2.0, -2.0])
    with pytest.raises(ValueError, match="constant"):
        Normaliser.fit(np.array([5.0, 5.0]), "m")


def test_hand_made_fusion_picks_the_first_draw_that_favours_the_separating_member() -> None:
    # a separates the validation set, b is its mirror image: after normalisation b = -a, so a draw's total is
    # (w_a - w_b) * a: AUROC 1 exactly when w_a > w_b, and every such draw has the same margin, so the tie rule
    # (best AUROC, then margin, then lowest index) keeps the first uniform draw with w_a > w_b.
    a = member([0.0, 1.0, 3.0, 4.0], [0.0, 4.0, 1.0, 3.0])
    b = member([4.0, 3.0, 1.0, 0.0], [9.0, 9.0, 9.0, 9.0])
    result = score(context({"a": a, "b": b}))
    draws = uniform_draws(123, 50, 2)
    expected = draws[np.flatnonzero(draws[:, 0] > draws[:, 1])[0]]
    assert result.extra["weights"]["uniform"] == pytest.approx(expected, abs=1e-6)
    assert result.extra["weights"]["equal"] == [0.5, 0.5]
    # normalisers: a's validation values have mean 2, std sqrt(2.5); b's the same
    za = (np.array([0.0, 4.0, 1.0, 3.0]) - 2) / np.sqrt(2.5)
    zb = (np.full(4, 9.0) - 2) / np.sqrt(2.5)
    assert result.scores["a"].to_numpy() == pytest.approx(za)
    assert result.scores["score"].to_numpy() == pytest.approx(expected[0] * za + expected[1] * zb, abs=1e-5)
    assert result.scores["score_equal"].to_numpy() == pytest.approx(0.5 * za + 0.5 * zb)


def test_fused_maps_use_each_members_validation_map_statistics_and_the_same_weights() -> None:
    a = member([0.0, 1.0, 3.0, 4.0], [0.0, 4.0, 1.0, 3.0])
    b = member([4.0, 3.0, 1.0, 0.0], [2.0, 2.0, 2.0, 2.0], offset=10.0)
    result = score(context({"a": a, "b": b}, score_weights="equal"))
    expected = np.zeros((4, 2, 2))
    for m in (a, b):
        loc, scale = m.validation_maps.astype(float).mean(), m.validation_maps.astype(float).std()
        expected += 0.5 * (m.test_maps - loc) / scale
    assert result.maps == pytest.approx(expected, abs=1e-5)


def test_the_test_labels_never_change_the_chosen_weights() -> None:
    rng = np.random.default_rng(4)
    members = {name: member(list(rng.random(4) + [0, 0, 1, 1]), list(rng.random(4))) for name in ("a", "b", "c")}
    first = score(context(members))
    flipped = score(context(members, test_labels=1 - TEST_LABELS))
    assert first.extra["weights"] == flipped.extra["weights"]
    assert first.extra["validation"]["distributions"]["uniform"]["oracle_draw_index"] is not None


def test_members_with_different_validation_sets_are_refused() -> None:
    a = member([0.0, 1.0, 3.0, 4.0], [0.0, 4.0, 1.0, 3.0])
    b = member([4.0, 3.0, 1.0, 0.0], [1.0, 1.0, 1.0, 1.0])
    b.validation_ids = ["x0", "x1", "x2", "x3"]
    with pytest.raises(ValueError, match="different validation sets"):
        score(context({"a": a, "b": b}))
