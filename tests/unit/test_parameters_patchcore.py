"""Every ``patchcore`` parameter reaches its maths: one non-default value at a time on the tiny world with a timm
ResNet-18 store (random weights), through the real orchestration (:func:`fsad.scorers.run.run_scorer`), checking which
outputs move (and how) and which stay put.

Expected values are computed here from the stored feature maps with other operations than the method's: 3x3 means
as sums of shifted copies, distances by ``torch.cdist``, the reweighting image by image with sorted distances.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch.nn import functional as F

from fsad.data.splits import read_split
from fsad.features.store import FeatureStore
from fsad.scorers.patchcore.method import METHOD

from .tiny_world import World, assert_smoothing_moves_the_maps_alone, build_world, memoized_scores, write_pool

COVERED: dict[str, str] = {
    "patchcore.layers": "test_the_layers_choose_the_stages_of_the_embedding",
    "patchcore.embedding": "test_the_original_embedding_projects_to_1024_dimensions",
    "patchcore.coreset_ratio": "test_the_coreset_ratio_keeps_that_share_of_the_patches",
    "patchcore.neighbours": "test_the_neighbours_and_the_image_score_set_the_image_score_alone",
    "patchcore.image_score": "test_the_neighbours_and_the_image_score_set_the_image_score_alone",
    "patchcore.sigma": "test_sigma_smooths_the_maps_and_moves_no_score",
    "patchcore.generator": "test_the_generator_and_the_count_choose_the_pool_images_in_the_bank",
    "patchcore.generated_references": "test_the_generator_and_the_count_choose_the_pool_images_in_the_bank",
}
RESNET = {"library": "timm", "arch": "resnet18", "pretrained": "none", "image_size": 112}


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> World:
    return build_world(tmp_path_factory.mktemp("patchcore_world"), window_sizes=(), layers=(2, 3), vv_layers=(), backbone=RESNET)


@pytest.fixture(scope="module")
def runs(world):
    return memoized_scores(world, "patchcore", "k2")


def stage_map(features, layer: int) -> torch.Tensor:
    rows = features.layers[layer]
    side = int(round(rows.shape[1] ** 0.5))
    return rows.transpose(1, 2).reshape(len(rows), -1, side, side)


def mean_3x3(maps: torch.Tensor) -> torch.Tensor:
    """3x3 means with zeros outside (padding counted), as the sum of the nine shifted copies over 9."""
    padded = F.pad(maps, (1, 1, 1, 1))
    h, w = maps.shape[-2:]
    return sum(padded[..., dy : dy + h, dx : dx + w] for dy in range(3) for dx in range(3)) / 9


def embeddings(features, layers) -> torch.Tensor:
    """``(N, P, D)`` locally aware patch features written out."""
    maps = [mean_3x3(stage_map(features, layer)) for layer in layers]
    size = maps[0].shape[-2:]
    joined = torch.cat([maps[0], *(F.interpolate(m, size=size, mode="bilinear", align_corners=False) for m in maps[1:])], dim=1)
    return joined.flatten(2).transpose(1, 2)


def expected(world: World, setting: str, layers=(2, 3), neighbours: int = 9, extra_refs: list[torch.Tensor] = ()) -> tuple[np.ndarray, np.ndarray]:
    """(reweighted image scores, maximum patch distances) of the split's test images, from the store."""
    store, split = FeatureStore(world.store), read_split(world.splits[setting])
    references = embeddings(store.load(split.normal_refs), layers)
    bank = torch.cat([references.reshape(-1, references.shape[-1]), *extra_refs])
    tests = embeddings(store.load(split.test), layers)
    scores, maxima = [], []
    for image in tests:
        distances = torch.cdist(image, bank)
        nearest = distances.min(dim=1)
        worst = int(nearest.values.argmax())
        m_star = bank[nearest.indices[worst]]
        support = torch.cdist(m_star[None], bank)[0].argsort()[:neighbours]
        d = torch.cdist(image[worst][None], bank[support])[0]
        weight = 1 - torch.exp(d[0]) / torch.exp(d).sum()
        scores.append(float(weight * nearest.values[worst]))
        maxima.append(float(nearest.values[worst]))
    return np.array(scores), np.array(maxima)


def test_the_default_is_the_reweighted_score_of_layers_2_and_3(world, runs):
    out = runs()
    scores, maxima = expected(world, "k2")
    np.testing.assert_allclose(out.scores["max_distance"], maxima, rtol=1e-4)
    np.testing.assert_allclose(out.scores["score"], scores, rtol=1e-4)
    memory = out.details["scorer_details"]["memory"]
    assert memory == {"references": 2, "patches": 2 * 14 * 14, "bank": 2 * 14 * 14, "grid": 14, "dim": 128 + 256}
    assert out.maps.shape == (len(read_split(world.splits["k2"]).test), world.map_size, world.map_size)


def test_the_layers_choose_the_stages_of_the_embedding(world, runs):
    out = runs({"layers": [3]})
    _, maxima = expected(world, "k2", layers=(3,))
    np.testing.assert_allclose(out.scores["max_distance"], maxima, rtol=1e-4)
    assert out.details["scorer_details"]["memory"] == {"references": 2, "patches": 2 * 7 * 7, "bank": 2 * 7 * 7, "grid": 7, "dim": 256}
    assert METHOD.features(world.params("patchcore", {"layers": [3]})).layers == (3,)
    assert METHOD.features(world.params("patchcore", {})).layers == (2, 3)


def test_the_original_embedding_projects_to_1024_dimensions(world, runs):
    default, out = runs(), runs({"embedding": "original"})
    assert out.details["scorer_details"]["memory"]["dim"] == 1024 and out.details["scorer_details"]["memory"]["grid"] == 14
    assert not np.allclose(out.scores["max_distance"], default.scores["max_distance"], rtol=1e-3)
    assert not np.allclose(out.maps, default.maps, atol=1e-4)


def test_the_coreset_ratio_keeps_that_share_of_the_patches(world, runs):
    default, out = runs(), runs({"coreset_ratio": 0.25})
    memory = out.details["scorer_details"]["memory"]
    assert memory["patches"] == 392 and memory["bank"] == 98
    # a bank of fewer patches is never nearer
    assert (out.scores["max_distance"] >= default.scores["max_distance"] - 1e-5).all()
    assert (out.scores["max_distance"] > default.scores["max_distance"] + 1e-5).any()
    assert not np.allclose(out.maps, default.maps, atol=1e-5)


def test_the_neighbours_and_the_image_score_set_the_image_score_alone(world, runs):
    default = runs()
    three = runs({"neighbours": 3})
    plain = runs({"image_score": "max"})
    scores, _ = expected(world, "k2", neighbours=3)
    np.testing.assert_allclose(three.scores["score"], scores, rtol=1e-4)
    assert not np.allclose(three.scores["score"], default.scores["score"], rtol=1e-4)
    np.testing.assert_allclose(plain.scores["score"], default.scores["max_distance"], rtol=1e-6)
    for out in (three, plain):
        pd.testing.assert_series_equal(out.scores["max_distance"], default.scores["max_distance"])
        np.testing.assert_array_equal(out.maps, default.maps)


def test_sigma_smooths_the_maps_and_moves_no_score(runs):
    assert_smoothing_moves_the_maps_alone(runs({"sigma": 0.0}), runs(), runs({"sigma": 8.0}))


# --- the generated pool -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pool(world) -> dict[str, Path]:
    """A generator's pool for the k1 run: the reference, then ``g0`` (a train normal) and ``g1`` (a copy of the first
    anomalous test image), with their features on the world's backbone."""
    return write_pool(world, layers=(2, 3))


@pytest.mark.parametrize("count", [None, 1])
def test_the_generator_and_the_count_choose_the_pool_images_in_the_bank(world, runs, pool, count):
    declared = METHOD.generated(world.params("patchcore", {"generator": "gen_a"}))
    assert (declared.generator, declared.pool, declared.personalized) == ("gen_a", True, False)
    assert METHOD.generated(world.params("patchcore", {})).generator is None
    params = {"generator": "gen_a", "generated_references": count}
    out = world.score("patchcore", params, setting="k1", generated={"generated_pool": pool["generated_pool"], "generated_pool_features": pool["generated_pool_features"]},
                      out=world.root / "scores" / f"pool_{count}").scores.set_index("image_id")
    alone = runs({}, "k1").scores.set_index("image_id")
    generated = FeatureStore(pool["generated_pool_features"]).load(["g0", "g1"][: count or 2])
    extra = embeddings(generated, (2, 3)).reshape(-1, 128 + 256)
    _, maxima = expected(world, "k1", extra_refs=[extra])
    np.testing.assert_allclose(out["max_distance"], maxima, rtol=1e-4)
    # the copy of a test image in the bank: that image finds itself (up to float32 cancellation under the root)
    finds_itself = out.loc[pool["copy_of"], "max_distance"] < 0.01 * alone.loc[pool["copy_of"], "max_distance"]
    assert finds_itself == (count is None)
    assert (out["max_distance"] <= alone["max_distance"] + 1e-5).all()
