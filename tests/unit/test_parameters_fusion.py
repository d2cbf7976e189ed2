"""Every ``fusion`` parameter reaches its maths: the scorer on hand-made members (expected values from the documented
seed rule and sklearn), and the validation set's images counted and compared pixel by pixel."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from sklearn.metrics import roc_auc_score

from fsad.fusion.validation_set import made_validation_images
from fsad.scorers.fusion.scorer import score
from fsad.seeding import derive_seed

from .test_fusion_scorer import VALIDATION_LABELS, context, member, uniform_draws

COVERED: dict[str, str] = {
    "fusion.members": "test_the_members_choose_and_order_the_columns",
    "fusion.n_draws": "test_n_draws_and_the_distributions_set_the_searched_draws",
    "fusion.distributions": "test_n_draws_and_the_distributions_set_the_searched_draws",
    "fusion.score_weights": "test_score_weights_chooses_the_weights_of_the_score_column",
    "fusion.validation.normal_augmentations": "test_the_validation_set_holds_the_asked_augmentations_and_defects",
    "fusion.validation.anomalies": "test_the_validation_set_holds_the_asked_augmentations_and_defects",
    "fusion.validation.defect_types": "test_the_validation_set_holds_the_asked_augmentations_and_defects",
}


def three_members() -> dict:
    rng = np.random.default_rng(9)
    return {name: member(list(rng.random(4) + shift * VALIDATION_LABELS), list(rng.random(4))) for name, shift in (("a", 1.0), ("b", 0.2), ("c", 0.5))}


def test_the_members_choose_and_order_the_columns() -> None:
    members = three_members()
    result = score(context(members, members=["c", "a"]))
    assert [c for c in result.scores.columns if c in members] == ["c", "a"]
    assert len(result.extra["weights"]["equal"]) == 2 and result.extra["members"] == ["c", "a"]


def test_n_draws_and_the_distributions_set_the_searched_draws() -> None:
    members = three_members()
    result = score(context(members, n_draws=7, distributions=["uniform", "normal"]))
    report = result.extra["validation"]["distributions"]
    assert sorted(report) == ["normal", "uniform"] and len(report["uniform"]["test_auroc_per_draw"]) == 7
    # the chosen uniform draw is one of the 7 documented draws, with the best validation AUROC (sklearn)
    columns = np.stack([(m.validation_scores - m.validation_scores.mean()) / m.validation_scores.std() for m in members.values()], axis=1)
    draws = uniform_draws(123, 7, 3)
    aurocs = [roc_auc_score(VALIDATION_LABELS, columns @ d) for d in draws]
    assert report["uniform"]["validation_auroc"] == pytest.approx(max(aurocs), abs=1e-6)
    assert result.extra["weights"]["uniform"] == pytest.approx(draws[report["uniform"]["draw_index"]], abs=1e-6)


def test_score_weights_chooses_the_weights_of_the_score_column() -> None:
    members = three_members()
    equal = score(context(members, score_weights="equal"))
    searched = score(context(members, score_weights="uniform"))
    assert equal.scores["score"].to_numpy() == pytest.approx(equal.scores["score_equal"].to_numpy())
    assert searched.scores["score"].to_numpy() == pytest.approx(searched.scores["score_uniform"].to_numpy())
    assert not np.allclose(equal.scores["score"], searched.scores["score"])


def test_the_validation_set_holds_the_asked_augmentations_and_defects() -> None:
    rng = np.random.default_rng(0)
    normals = {f"n{i}": Image.fromarray((rng.random((32, 32, 3)) * 255).astype(np.uint8)) for i in range(2)}
    made = made_validation_images(normals, 3, 5, ["spot", "scratch"], seed=7)
    assert made.image_ids == ["n0#augment0", "n1#augment1", "n0#augment2", *(f"n{i % 2}#defect{i}" for i in range(5))]
    assert list(made.labels) == [0, 0, 0, 1, 1, 1, 1, 1]
    assert made.defect_types == ["", "", "", "spot", "scratch", "spot", "scratch", "spot"]
    for image, source, label in zip(made.images, made.sources, made.labels):
        changed = np.any(np.asarray(image) != np.asarray(normals[source]), axis=-1)
        assert changed.any()  # an augmentation or a defect changes pixels of its own source
        if label == 1:
            assert changed.mean() < 1  # a defect is local: the rest of its source is untouched
    again = made_validation_images(normals, 3, 5, ["spot", "scratch"], seed=7)
    assert all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(made.images, again.images))
    assert derive_seed(7, "fusion_validation", "defects") != derive_seed(8, "fusion_validation", "defects")
