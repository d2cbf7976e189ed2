"""Every ``winclip`` parameter reaches its maths: one non-default value at a time on the tiny world, through the
real orchestration (:func:`fsad.scorers.run.run_scorer`), checking which outputs move (and how) and which stay put.

Text-side parameters (preset, temperature, normalisation, class name) are checked against a zero-shot score
computed here from the stored image embeddings and a freshly built text tower; they must never touch the memory
sub-scores. Memory-side parameters (window sizes, generated references) are checked against nearest-neighbour
distances computed here from the stored features.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch.nn import functional as F

from fsad.backbones.loading import load_backbone
from fsad.data.splits import read_split
from fsad.features.store import FeatureStore
from fsad.scorers.registry import method_params
from fsad.scorers.winclip.method import METHOD
from fsad.text import class_names
from fsad.text.prompt_ensembles import ANOMALIB_TEMPLATES, ANOMALOUS_STATES, NORMAL_STATES, PAPER_TEMPLATES

from .tiny_world import CATEGORY, LAYERS, TINY, VV_LAYERS, WINDOW_SIZES, ScoreOutputs, World, build_world, memoized_scores, write_pool


COVERED: dict[str, str] = {
    "winclip.prompt_preset": "test_text_parameters_set_the_zero_shot_score_and_never_the_memory",
    "winclip.temperature": "test_text_parameters_set_the_zero_shot_score_and_never_the_memory",
    "winclip.text_normalisation": "test_text_parameters_set_the_zero_shot_score_and_never_the_memory",
    "winclip.class_name_mode": "test_the_class_name_mode_chooses_the_name_in_the_prompts",
    "winclip.window_sizes": "test_the_window_sizes_choose_the_memory_scales_and_the_zero_shot_map",
    "winclip.generator": "test_the_generator_names_the_pool_whose_images_join_the_references",
    "winclip.generated_references": "test_generated_references_counts_the_pool_images_joining_the_memory",
}
TEXT_PARAMS = {"prompt_preset", "temperature", "text_normalisation"}


# --- the world and an independent zero-shot score ----------------------------------------------------------


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> World:
    return build_world(tmp_path_factory.mktemp("winclip_world"))


@pytest.fixture(scope="module")
def backbone():
    """The tiny CLIP the store was encoded with (same random weights: same spec and seed)."""
    return load_backbone(TINY, "cpu")


@pytest.fixture(scope="module")
def runs(world):
    """``runs(params, setting)``: score outputs, memoised so the modules' tests share the baseline runs."""
    return memoized_scores(world, "winclip")


def split_test_ids(world: World, setting: str) -> list[str]:
    return read_split(world.splits[setting]).test


_CLASS_EMBEDDINGS: dict[tuple, torch.Tensor] = {}


def class_embeddings(backbone, preset: str, normalisation: str, name: str) -> torch.Tensor:
    """``(2, D)`` normal and anomalous means of the preset's prompts, every template filled with every state."""
    key = (id(backbone), preset, normalisation, name)
    if key in _CLASS_EMBEDDINGS:
        return _CLASS_EMBEDDINGS[key]
    templates = {"paper": PAPER_TEMPLATES, "anomalib": ANOMALIB_TEMPLATES}[preset]

    def mean(states: tuple[str, ...]) -> torch.Tensor:
        embeddings = backbone.encode_text([template.format(state.format(name)) for state in states for template in templates]).float()
        if normalisation == "raw_mean":
            return embeddings.mean(dim=0)
        return F.normalize(F.normalize(embeddings, dim=-1).mean(dim=0), dim=-1)

    _CLASS_EMBEDDINGS[key] = torch.stack([mean(NORMAL_STATES), mean(ANOMALOUS_STATES)])
    return _CLASS_EMBEDDINGS[key]


def expected_zero_shot(world: World, backbone, image_ids: list[str], preset: str, temperature: float, normalisation: str,
                       name: str = CATEGORY) -> np.ndarray:
    """WinCLIP Eq. 1 written out: softmax over (normal, anomalous) of cos(image, class mean) / temperature."""
    text = F.normalize(class_embeddings(backbone, preset, normalisation, name), dim=-1)
    images = F.normalize(FeatureStore(world.store).load(image_ids).image_embeddings.float(), dim=-1)
    return ((images @ text.T) / temperature).softmax(dim=-1)[:, 1].numpy()


def memory_columns(frame: pd.DataFrame) -> list[str]:
    return [c for c in frame.columns if c.startswith("memory_")]


# --- text parameters ----------------------------------------------------------------------------------------

# (params, (preset, temperature, normalisation) the zero-shot score must follow); the defaults are paper, its
# temperature 0.01 and its normalised mean. The last two cases set all three apart from each other and from the
# preset's own values, so a swap or a fallback to the preset shows.
TEXT_CASES = [
    ({"temperature": 0.05}, ("paper", 0.05, "normalised_mean")),
    ({"text_normalisation": "raw_mean"}, ("paper", 0.01, "raw_mean")),
    ({"prompt_preset": "anomalib"}, ("anomalib", 0.07, "raw_mean")),
    ({"prompt_preset": "anomalib", "temperature": 0.02, "text_normalisation": "normalised_mean"}, ("anomalib", 0.02, "normalised_mean")),
    ({"prompt_preset": "paper", "temperature": 0.3, "text_normalisation": "raw_mean"}, ("paper", 0.3, "raw_mean")),
]


@pytest.mark.parametrize("setting", ["k1", "zs"])
@pytest.mark.parametrize("params,expected", TEXT_CASES, ids=[repr(p) for p, _ in TEXT_CASES])
def test_text_parameters_set_the_zero_shot_score_and_never_the_memory(world, backbone, runs, params, expected, setting):
    ids = split_test_ids(world, setting)
    default = runs({}, setting)
    out = runs(params, setting)
    want = expected_zero_shot(world, backbone, ids, *expected)
    assert not np.allclose(want, expected_zero_shot(world, backbone, ids, "paper", 0.01, "normalised_mean"), atol=1e-3), "case cannot tell"
    np.testing.assert_allclose(default.scores["zero_shot"], expected_zero_shot(world, backbone, ids, "paper", 0.01, "normalised_mean"), atol=1e-5)
    np.testing.assert_allclose(out.scores["zero_shot"], want, atol=1e-5)
    assert not np.allclose(out.maps, default.maps, atol=1e-6)
    if setting == "k1":
        # score = (zero-shot + max of the mean few-shot map) / 2: only the zero-shot half moves
        np.testing.assert_allclose(out.scores["score"] - out.scores["zero_shot"] / 2, default.scores["score"] - default.scores["zero_shot"] / 2, atol=1e-6)
        assert memory_columns(out.scores) == ["memory_patch", "memory_w2", "memory_w3"]
        pd.testing.assert_frame_equal(out.scores[memory_columns(out.scores)], default.scores[memory_columns(default.scores)])
    else:
        np.testing.assert_allclose(out.scores["score"], want, atol=1e-5)
        assert memory_columns(out.scores) == []


def test_a_higher_temperature_pulls_the_zero_shot_score_towards_one_half(runs):
    cold, warm = runs({"temperature": 0.05}), runs({"temperature": 0.3})
    assert ((warm.scores["zero_shot"] - 0.5).abs() < (cold.scores["zero_shot"] - 0.5).abs()).all()
    # two-class softmax: logit(p) * temperature is the cosine gap, whatever the temperature
    logit = lambda p: np.log(p / (1 - p))  # noqa: E731
    np.testing.assert_allclose(logit(warm.scores["zero_shot"]) * 0.3, logit(cold.scores["zero_shot"]) * 0.05, rtol=1e-3)


def test_the_class_name_mode_chooses_the_name_in_the_prompts(world, backbone, runs, monkeypatch):
    # "widget" reads the same both ways; give it a readable name so that the two modes differ
    monkeypatch.setitem(class_names.READABLE_NAMES, CATEGORY, "spring clip")
    ids = split_test_ids(world, "k1")
    readable = world.score("winclip", {"class_name_mode": "readable"}, setting="k1", out=world.root / "scores" / "readable")
    verbatim = world.score("winclip", {"class_name_mode": "verbatim"}, setting="k1", out=world.root / "scores" / "verbatim")
    np.testing.assert_allclose(readable.scores["zero_shot"], expected_zero_shot(world, backbone, ids, "paper", 0.01, "normalised_mean", "spring clip"), atol=1e-5)
    np.testing.assert_allclose(verbatim.scores["zero_shot"], expected_zero_shot(world, backbone, ids, "paper", 0.01, "normalised_mean", CATEGORY), atol=1e-5)
    assert not np.allclose(readable.scores["zero_shot"], verbatim.scores["zero_shot"], atol=1e-4)
    pd.testing.assert_frame_equal(readable.scores[memory_columns(readable.scores)], verbatim.scores[memory_columns(verbatim.scores)])


def test_text_parameters_declare_no_features_and_no_generated_images():
    filled = method_params(METHOD, {"prompt_preset": "anomalib", "temperature": 0.3, "text_normalisation": "raw_mean", "class_name_mode": "verbatim"})
    assert METHOD.features(filled) == METHOD.features(method_params(METHOD, {}))
    assert METHOD.generated(filled).generator is None


# --- memory parameters --------------------------------------------------------------------------------------


def nearest_distance(tests: torch.Tensor, references: torch.Tensor) -> torch.Tensor:
    """WinCLIP Eq. 4 written out: per test entry ``min over reference entries of (1 - cos) / 2``, ``(N, L)``."""
    tests, references = F.normalize(tests, dim=-1), F.normalize(references.reshape(-1, references.shape[-1]), dim=-1)
    return ((1 - tests @ references.T) / 2).amin(dim=-1)


def test_the_window_sizes_choose_the_memory_scales_and_the_zero_shot_map(world, runs):
    default, out = runs({}), runs({"window_sizes": [2, 7]})
    assert memory_columns(out.scores) == ["memory_patch", "memory_w2", "memory_w7"]
    # the scales both runs share are the same numbers; the image-level zero-shot score reads no window
    pd.testing.assert_frame_equal(out.scores[["zero_shot", "memory_patch", "memory_w2"]], default.scores[["zero_shot", "memory_patch", "memory_w2"]])
    # a 7-patch window on the 7x7 grid is one window covering every patch: its map's maximum is its distance
    store, split = FeatureStore(world.store), read_split(world.splits["k1"])
    tests, refs = store.load(split.test, window_sizes=[7]), store.load(split.normal_refs, window_sizes=[7])
    assert tests.grid == 7
    np.testing.assert_allclose(out.scores["memory_w7"], nearest_distance(tests.windows[7], refs.windows[7])[:, 0].numpy(), atol=1e-5)
    assert not np.allclose(out.maps, default.maps, atol=1e-6)
    assert not np.allclose(out.scores["score"], default.scores["score"], atol=1e-6)
    assert METHOD.features(method_params(METHOD, {"window_sizes": [2, 7]})).window_sizes == (2, 7)


def test_without_references_the_window_sizes_move_the_map_and_not_the_image_score(runs):
    default, out = runs({}, "zs"), runs({"window_sizes": [3, 7]}, "zs")
    pd.testing.assert_frame_equal(out.scores[["score", "zero_shot"]], default.scores[["score", "zero_shot"]])
    assert not np.allclose(out.maps, default.maps, atol=1e-6)
    # the map is the harmonic mean over the image score and one map per window size: a 7-window map is flat
    # per image, so with window sizes [7] alone the map is flat too
    flat = runs({"window_sizes": [7]}, "zs").maps
    np.testing.assert_allclose(flat, flat[:, :1, :1] * np.ones_like(flat), atol=1e-3)


# --- generated references -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pool(world) -> dict[str, Path]:
    """A generator's pool for the k1 run: the reference, then ``g0`` (a train normal) and ``g1`` (a copy of the
    first anomalous test image), with their feature store."""
    return write_pool(world, WINDOW_SIZES, LAYERS, VV_LAYERS)


def with_pool(world: World, pool: dict, params: dict, name: str) -> ScoreOutputs:
    generated = {"generated_pool": pool["generated_pool"], "generated_pool_features": pool["generated_pool_features"]}
    return world.score("winclip", params, setting="k1", generated=generated, out=world.root / "scores" / name)


def test_the_generator_names_the_pool_whose_images_join_the_references(world, runs, pool):
    declared = METHOD.generated(world.params("winclip", {"generator": "gen_a"}))
    assert (declared.generator, declared.pool, declared.personalized) == ("gen_a", True, False)
    assert METHOD.generated(world.params("winclip", {})).generator is None
    alone, joined = runs({}), with_pool(world, pool, {"generator": "gen_a"}, "pool_all").scores.set_index("image_id")
    alone = alone.scores.set_index("image_id")
    # the copy of a test image in the memory: that image finds itself at every scale
    assert joined.loc[pool["copy_of"], ["memory_patch", "memory_w2", "memory_w3"]].tolist() == pytest.approx([0, 0, 0], abs=1e-5)
    assert (alone.loc[pool["copy_of"], ["memory_patch", "memory_w2", "memory_w3"]] > 1e-3).all()
    pd.testing.assert_series_equal(joined["zero_shot"], alone["zero_shot"])


@pytest.mark.parametrize("count", [1, 2])
def test_generated_references_counts_the_pool_images_joining_the_memory(world, pool, count):
    out = with_pool(world, pool, {"generator": "gen_a", "generated_references": count}, f"pool_{count}").scores.set_index("image_id")
    # independently: the patch-scale distance to the reference plus the first ``count`` pool images, in pool order
    store = FeatureStore(world.store)
    split = read_split(world.splits["k1"])
    generated = FeatureStore(pool["generated_pool_features"]).load(["g0", "g1"][:count], window_sizes=[])
    refs = torch.cat([store.load(split.normal_refs, window_sizes=[]).patch_tokens, generated.patch_tokens])
    tests = store.load(split.test, window_sizes=[]).patch_tokens
    want = nearest_distance(tests, refs).amax(dim=-1).numpy()
    np.testing.assert_allclose(out.loc[split.test, "memory_patch"], want, atol=1e-5)
    copy_distance = out.loc[pool["copy_of"], "memory_patch"]
    assert (copy_distance < 1e-5) == (count == 2)
