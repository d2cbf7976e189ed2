"""Every ``anomalydino`` parameter reaches its maths: one non-default value at a time on the tiny world with a timm
DINOv2 ViT-S/14 store (random weights, 112 px: an 8x8 grid), through the real orchestration, checking which outputs
move (and how) and which stay put.

Expected values are computed here from the stored tokens with other code than the method's: distances by sorting
cosine similarities, masks with scikit-learn's PCA and OpenCV's dilation and closing (as the public code does them).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from sklearn.decomposition import PCA

from fsad.data.splits import read_split
from fsad.features.store import FeatureStore
from fsad.scorers.anomalydino.method import METHOD

from .tiny_world import CATEGORY, ScoreOutputs, World, assert_smoothing_moves_the_maps_alone, build_world, memoized_scores, write_pool

COVERED: dict[str, str] = {
    "anomalydino.rotations": "test_rotations_add_seven_turned_copies_of_every_reference",
    "anomalydino.masking": "test_masking_zeroes_the_background_patches_of_the_categories_it_names",
    "anomalydino.mask_threshold": "test_masking_zeroes_the_background_patches_of_the_categories_it_names",
    "anomalydino.mask_references": "test_mask_references_keeps_only_their_foreground_in_the_memory",
    "anomalydino.top_fraction": "test_the_top_fraction_sets_how_many_patches_the_image_score_averages",
    "anomalydino.sigma": "test_sigma_smooths_the_maps_and_moves_no_score",
    "anomalydino.generator": "test_the_generator_and_the_count_choose_the_pool_images_in_the_memory",
    "anomalydino.generated_references": "test_the_generator_and_the_count_choose_the_pool_images_in_the_memory",
}
DINO = {"library": "timm", "arch": "vit_small_patch14_dinov2", "pretrained": "none", "image_size": 112}
GRID = 8
THRESHOLD = 12.0  # not the default 10; the random tokens' first component spans about -17..17, and a third of the patches stay


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> World:
    return build_world(tmp_path_factory.mktemp("anomalydino_world"), window_sizes=(), layers=(), vv_layers=(), backbone=DINO)


@pytest.fixture(scope="module")
def runs(world):
    return memoized_scores(world, "anomalydino")


def tokens(world: World, ids: list[str]) -> np.ndarray:
    return FeatureStore(world.store).load(ids).patch_tokens.double().numpy()


def distances(tests: np.ndarray, memory: np.ndarray) -> np.ndarray:
    """``(N, P)``: 1 - the largest cosine similarity to a memory token, from the sorted similarities."""
    unit = lambda a: a / np.linalg.norm(a, axis=-1, keepdims=True)  # noqa: E731
    similarity = unit(tests) @ unit(memory).T
    return 1 - np.sort(similarity, axis=-1)[..., -1]


def top_mean(scores: np.ndarray, count: int) -> np.ndarray:
    return np.sort(scores, axis=1)[:, ::-1][:, :count].mean(axis=1)


def code_mask(image_tokens: np.ndarray, threshold: float) -> np.ndarray:
    """The public code's compute_background_mask (masking on), with scikit-learn's exact PCA and OpenCV."""
    component = PCA(n_components=1, svd_solver="full").fit_transform(image_tokens.astype(np.float32))[:, 0]
    mask = component > threshold
    centre = mask.reshape(GRID, GRID)[int(GRID * 0.2) : int(GRID * 0.8), int(GRID * 0.2) : int(GRID * 0.8)]
    if centre.sum() <= centre.size * 0.35:
        mask = -component > threshold
    kernel = np.ones((3, 3), np.uint8)
    mask = cv2.dilate(mask.reshape(GRID, GRID).astype(np.uint8), kernel)
    return cv2.morphologyEx(mask, cv2.MORPH_CLOSE, kernel).astype(bool).ravel()


def test_without_rotations_the_score_is_the_mean_of_the_top_patch_distances(world, runs):
    split = read_split(world.splits["k1"])
    out = runs({"rotations": False})
    want = distances(tokens(world, split.test), tokens(world, split.normal_refs).reshape(-1, 384))
    np.testing.assert_allclose(out.scores["max_distance"], want.max(axis=1), atol=1e-5)
    np.testing.assert_allclose(out.scores["score"], want.max(axis=1), atol=1e-5)  # 1 % of 64 patches: the largest one
    assert out.details["scorer_details"]["memory"] == {"references": 1, "tokens": GRID * GRID, "rotations": [0]}
    assert out.details["scorer_details"]["masking"] is False  # "widget" is not one of the code's categories


def test_rotations_add_seven_turned_copies_of_every_reference(world, runs):
    plain, turned = runs({"rotations": False}), runs({})
    assert turned.details["scorer_details"]["memory"] == {"references": 1, "tokens": 8 * GRID * GRID, "rotations": [0, 45, 90, 135, 180, 225, 270, 315]}
    # a larger memory is never farther, and the turned copies are other tokens
    assert (turned.scores["max_distance"] <= plain.scores["max_distance"] + 1e-6).all()
    assert (turned.scores["max_distance"] < plain.scores["max_distance"] - 1e-4).any()


def test_the_top_fraction_sets_how_many_patches_the_image_score_averages(world, runs):
    split = read_split(world.splits["k1"])
    out = runs({"rotations": False, "top_fraction": 0.25})
    want = distances(tokens(world, split.test), tokens(world, split.normal_refs).reshape(-1, 384))
    np.testing.assert_allclose(out.scores["score"], top_mean(want, 16), atol=1e-5)
    pd.testing.assert_series_equal(out.scores["max_distance"], runs({"rotations": False}).scores["max_distance"])


@pytest.mark.parametrize("masking", [True, [CATEGORY, "pill"]])
def test_masking_zeroes_the_background_patches_of_the_categories_it_names(world, runs, masking):
    split = read_split(world.splits["k1"])
    tests = tokens(world, split.test)
    out = runs({"rotations": False, "masking": masking, "mask_threshold": THRESHOLD, "top_fraction": 0.25})
    masks = np.stack([code_mask(image, THRESHOLD) for image in tests])
    assert 0 < masks.mean() < 1, "the case cannot tell"
    want = distances(tests, tokens(world, split.normal_refs).reshape(-1, 384)) * masks
    np.testing.assert_allclose(out.scores["score"], top_mean(want, 16), atol=1e-5)
    np.testing.assert_allclose(out.scores["max_distance"], want.max(axis=1), atol=1e-5)
    assert out.details["scorer_details"]["masking"] is True
    assert out.details["scorer_details"]["foreground_share"] == pytest.approx(masks.mean(), abs=1e-6)
    # a category the list does not name, or a threshold that everything passes, masks nothing
    unmasked = runs({"rotations": False, "top_fraction": 0.25})
    pd.testing.assert_frame_equal(runs({"rotations": False, "masking": ["pill"], "mask_threshold": THRESHOLD, "top_fraction": 0.25}).scores, unmasked.scores)
    everything = runs({"rotations": False, "masking": masking, "mask_threshold": -1.0e9, "top_fraction": 0.25})
    np.testing.assert_allclose(everything.scores["score"], unmasked.scores["score"], atol=1e-6)
    assert not np.allclose(out.maps, unmasked.maps, atol=1e-5)
    # the threshold decides the masks: the default 10 keeps other patches than 12
    default = runs({"rotations": False, "masking": masking, "top_fraction": 0.25})
    masks_10 = np.stack([code_mask(image, 10.0) for image in tests])
    assert (masks_10 != masks).any()
    np.testing.assert_allclose(default.scores["max_distance"], (distances(tests, tokens(world, split.normal_refs).reshape(-1, 384)) * masks_10).max(axis=1), atol=1e-5)


def test_mask_references_keeps_only_their_foreground_in_the_memory(world, runs):
    split = read_split(world.splits["k1"])
    params = {"rotations": False, "masking": True, "mask_threshold": THRESHOLD}
    out = runs({**params, "mask_references": True})
    reference = tokens(world, split.normal_refs)[0]
    kept = code_mask(reference, THRESHOLD)
    assert 0 < kept.sum() < GRID * GRID, "the case cannot tell"
    assert out.details["scorer_details"]["memory"]["tokens"] == kept.sum()
    tests = tokens(world, split.test)
    want = distances(tests, reference[kept]) * np.stack([code_mask(image, THRESHOLD) for image in tests])
    np.testing.assert_allclose(out.scores["max_distance"], want.max(axis=1), atol=1e-5)
    assert runs(params).details["scorer_details"]["memory"]["tokens"] == GRID * GRID
    # without masking on the category there is nothing to mask the references with
    assert runs({"rotations": False, "masking": False, "mask_references": True}).details["scorer_details"]["memory"]["tokens"] == GRID * GRID


def test_sigma_smooths_the_maps_and_moves_no_score(runs):
    assert_smoothing_moves_the_maps_alone(runs({"rotations": False, "sigma": 0.0}), runs({"rotations": False}), runs({"rotations": False, "sigma": 8.0}))


# --- the generated pool -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pool(world) -> dict[str, Path]:
    """A generator's pool for the k1 run: the reference, then ``g0`` (a train normal) and ``g1`` (the first anomalous test
    image turned upside down), with their features on the world's backbone."""
    return write_pool(world, copy=lambda image: image.rotate(180))


@pytest.mark.parametrize("count", [None, 1])
def test_the_generator_and_the_count_choose_the_pool_images_in_the_memory(world, pool, count):
    declared = METHOD.generated(world.params("anomalydino", {"generator": "gen_a"}))
    assert (declared.generator, declared.pool, declared.personalized) == ("gen_a", True, False)
    assert METHOD.generated(world.params("anomalydino", {})).generator is None
    generated = {"generated_pool": pool["generated_pool"], "generated_pool_features": pool["generated_pool_features"]}

    def scored(rotations: bool) -> ScoreOutputs:
        params = {"generator": "gen_a", "generated_references": count, "rotations": rotations}
        return world.score("anomalydino", params, setting="k1", generated=generated, out=world.root / "scores" / f"pool_{count}_{rotations}")

    plain, turned = scored(False), scored(True)
    split = read_split(world.splits["k1"])
    memory = np.concatenate([tokens(world, split.normal_refs), FeatureStore(pool["generated_pool_features"]).load(["g0", "g1"][: count or 2]).patch_tokens.double().numpy()])
    np.testing.assert_allclose(plain.scores["max_distance"], distances(tokens(world, split.test), memory.reshape(-1, 384)).max(axis=1), atol=1e-5)
    assert plain.details["scorer_details"]["memory"]["references"] == 1 + (count or 2)
    assert turned.details["scorer_details"]["memory"]["tokens"] == 8 * GRID * GRID * (1 + (count or 2))
    # g1 turned back by the rotations is the test image itself: it finds every patch, but only with g1 and rotations
    own = turned.scores.set_index("image_id").loc[pool["copy_of"], "max_distance"]
    assert (own < 1e-4) == (count is None)
    assert plain.scores.set_index("image_id").loc[pool["copy_of"], "max_distance"] > 1e-3
