"""Every ``patchcore`` parameter reaches its maths: one non-default value at a time on the tiny world with a timm
ResNet-18 store (random weights), through the real orchestration (:func:`fsad.scorers.run.run_scorer`), checking which
outputs move (and how) and which stay put.

Expected values are computed here from the stored feature maps with other operations than the method's: 3x3 means
as sums of shifted copies, distances by ``torch.cdist``, the reweighting image by image with sorted distances.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch.nn import functional as F

from fsad.data.splits import read_split
from fsad.features.extract import update_store
from fsad.features.store import FeatureStore
from fsad.backbones.loading import load_backbone
from fsad.scorers.patchcore.method import METHOD

from .tiny_world import ScoreOutputs, World, build_world

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
    cache: dict[str, ScoreOutputs] = {}

    def run(params: dict | None = None, setting: str = "k2") -> ScoreOutputs:
        key = repr((sorted((params or {}).items()), setting))
        if key not in cache:
            cache[key] = world.score("patchcore", params or {}, setting=setting, out=world.root / "scores" / f"run{len(cache)}")
        return cache[key]

    return run


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


def test_sigma_smooths_the_maps_and_moves_no_score(world, runs):
    default, sharp, blurred = runs(), runs({"sigma": 0.0}), runs({"sigma": 8.0})
    pd.testing.assert_frame_equal(sharp.scores, default.scores)
    pd.testing.assert_frame_equal(blurred.scores, default.scores)
    # smoothing spreads the maps: the pixel variance falls as sigma grows
    spread = [out.maps.astype(np.float64).var(axis=(1, 2)).mean() for out in (sharp, default, blurred)]
    assert spread[0] > spread[1] > spread[2]


# --- the generated pool -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pool(world) -> dict[str, Path]:
    """A generator's pool for the k1 run: the reference, then ``g0`` (a train normal) and ``g1`` (a copy of the first
    anomalous test image), with their features on the world's backbone."""
    split = read_split(world.splits["k1"])
    manifest = pd.read_csv(world.manifest).set_index("image_id")
    copy_of = next(i for i in split.test if manifest.loc[i, "label"] == 1)
    unused = next(i for i in manifest.index if manifest.loc[i, "split"] == "train" and i not in split.normal_refs)
    directory = world.root / "pools" / "gen_a"
    directory.mkdir(parents=True)
    for name, source in (("g0.png", unused), ("g1.png", copy_of)):
        shutil.copy(manifest.loc[source, "image_path"], directory / name)
    pd.DataFrame({"image_id": [split.normal_refs[0], "g0", "g1"], "kind": ["reference", "text_to_image", "image_to_image"],
                  "file": ["", "g0.png", "g1.png"], "source": [split.normal_refs[0], "", copy_of]}).to_csv(directory / "index.csv", index=False)
    store = world.root / "pools" / "gen_a.h5"
    update_store(FeatureStore(store), load_backbone(RESNET, "cpu"), {"g0": str(directory / "g0.png"), "g1": str(directory / "g1.png")}, (), layers=(2, 3))
    return {"pool": directory, "pool_features": store, "copy_of": copy_of}


@pytest.mark.parametrize("count", [None, 1])
def test_the_generator_and_the_count_choose_the_pool_images_in_the_bank(world, runs, pool, count):
    declared = METHOD.generated(world.params("patchcore", {"generator": "gen_a"}))
    assert (declared.generator, declared.pool, declared.personalized) == ("gen_a", True, False)
    assert METHOD.generated(world.params("patchcore", {})).generator is None
    params = {"generator": "gen_a", "generated_references": count}
    out = world.score("patchcore", params, setting="k1", generated={"pool": pool["pool"], "pool_features": pool["pool_features"]},
                      out=world.root / "scores" / f"pool_{count}").scores.set_index("image_id")
    alone = runs({}, "k1").scores.set_index("image_id")
    generated = FeatureStore(pool["pool_features"]).load(["g0", "g1"][: count or 2])
    extra = embeddings(generated, (2, 3)).reshape(-1, 128 + 256)
    _, maxima = expected(world, "k1", extra_refs=[extra])
    np.testing.assert_allclose(out["max_distance"], maxima, rtol=1e-4)
    # the copy of a test image in the bank: that image finds itself (up to float32 cancellation under the root)
    finds_itself = out.loc[pool["copy_of"], "max_distance"] < 0.01 * alone.loc[pool["copy_of"], "max_distance"]
    assert finds_itself == (count is None)
    assert (out["max_distance"] <= alone["max_distance"] + 1e-5).all()
