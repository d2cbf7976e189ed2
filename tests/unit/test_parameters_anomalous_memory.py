"""Every ``anomalous_memory`` parameter reaches its maths: one non-default value at a time on the tiny world's
setting a1, through the real orchestration (:func:`fsad.scorers.run.run_scorer`) and the real report writer,
checking which outputs move (and how) and which stay put.

Expected values are computed here: the zero-shot score from the stored image embeddings and a fresh text tower
(shared with ``test_parameters_winclip``), memory sizes from the defect mask's pixels, weighted totals from the
sub-score columns and the weights the details report.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from numpy.lib.stride_tricks import sliding_window_view
from PIL import Image

from fsad.data.splits import read_split
from fsad.evaluation.collect import evaluate_run
from fsad.scorers.anomalous_memory import scorer as scorer_module
from fsad.scorers.anomalous_memory.method import METHOD
from fsad.scorers.anomalous_memory.report import write_report as write_anomalous_samples_report
from fsad.scorers.method import ReportContext
from fsad.scorers.registry import method_params
from fsad.text import class_names

from .test_parameters_winclip import expected_zero_shot
from .tiny_world import CATEGORY, TINY, WINDOW_SIZES, ScoreOutputs, World, build_world, write_pool


COVERED: dict[str, str] = {
    "anomalous_memory.prompt_preset": "test_text_parameters_set_the_zero_shot_sub_score_and_never_the_memories",
    "anomalous_memory.temperature": "test_text_parameters_set_the_zero_shot_sub_score_and_never_the_memories",
    "anomalous_memory.text_normalisation": "test_text_parameters_set_the_zero_shot_sub_score_and_never_the_memories",
    "anomalous_memory.class_name_mode": "test_the_class_name_mode_chooses_the_name_in_the_prompts",
    "anomalous_memory.window_sizes": "test_the_window_sizes_choose_the_scales_and_the_baseline_weights",
    "anomalous_memory.coverage_threshold": "test_the_coverage_threshold_sizes_the_anomalous_memory_only",
    "anomalous_memory.partial_windows": "test_partial_windows_normal_puts_the_touching_windows_into_the_reference_memory",
    "anomalous_memory.n_augmentations": "test_the_weight_search_parameters_reach_the_validation",
    "anomalous_memory.n_draws": "test_the_weight_search_parameters_reach_the_validation",
    "anomalous_memory.distributions": "test_the_weight_search_parameters_reach_the_validation",
    "anomalous_memory.score_weights": "test_the_weight_search_parameters_reach_the_validation",
    "anomalous_memory.generator": "test_the_generator_and_its_count_add_the_pool_images_to_the_reference_memory_only",
    "anomalous_memory.generated_references": "test_the_generator_and_its_count_add_the_pool_images_to_the_reference_memory_only",
    "anomalous_memory.baseline_scorer": "test_table_1_compares_with_the_configured_baseline_scorer_and_setting",
    "anomalous_memory.baseline_setting": "test_table_1_compares_with_the_configured_baseline_scorer_and_setting",
}
# Without the weight search a run takes ~0.1 s instead of seconds; the search is tested on its own.
FAST = {"distributions": []}
DEFAULT_SCALES = ["patch", "w2", "w3", "w7"]


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> World:
    return build_world(tmp_path_factory.mktemp("anomalous_world"))


@pytest.fixture(scope="module")
def backbone():
    from fsad.backbones.loading import load_backbone

    return load_backbone(TINY, "cpu")


@pytest.fixture(scope="module")
def runs(world):
    """``runs(params)``: a1 score outputs (fast defaults: no weight search), memoised across the module's tests."""
    cache: dict[str, ScoreOutputs] = {}

    def run(params: dict | None = None) -> ScoreOutputs:
        params = FAST | (params or {})
        key = repr(sorted(params.items()))
        if key not in cache:
            cache[key] = world.score("anomalous_memory", params, setting="a1", out=world.root / "scores" / f"run{len(cache)}")
        return cache[key]

    return run


def sub_score_columns(scales: list[str]) -> list[str]:
    return ["zero_shot"] + [f"reference_{s}" for s in scales] + [f"anomalous_{s}" for s in scales]


def memory(out: ScoreOutputs) -> dict[str, dict]:
    return out.details["scorer_details"]["memory"]


# --- text parameters ----------------------------------------------------------------------------------------

TEXT_CASES = [
    ({"temperature": 0.05}, ("paper", 0.05, "normalised_mean")),
    ({"text_normalisation": "raw_mean"}, ("paper", 0.01, "raw_mean")),
    ({"prompt_preset": "anomalib"}, ("anomalib", 0.07, "raw_mean")),
    ({"prompt_preset": "anomalib", "temperature": 0.02, "text_normalisation": "normalised_mean"}, ("anomalib", 0.02, "normalised_mean")),
]


@pytest.mark.parametrize("params,expected", TEXT_CASES, ids=[repr(p) for p, _ in TEXT_CASES])
def test_text_parameters_set_the_zero_shot_sub_score_and_never_the_memories(world, backbone, runs, params, expected):
    ids = read_split(world.splits["a1"]).test
    base, out = runs(), runs(params)
    default_zero_shot = expected_zero_shot(world, backbone, ids, "paper", 0.01, "normalised_mean")
    np.testing.assert_allclose(base.scores["zero_shot"], default_zero_shot, atol=1e-5)
    np.testing.assert_allclose(out.scores["zero_shot"], expected_zero_shot(world, backbone, ids, *expected), atol=1e-5)
    assert not np.allclose(out.scores["zero_shot"], base.scores["zero_shot"], atol=1e-3)
    memories = sub_score_columns(DEFAULT_SCALES)[1:]
    pd.testing.assert_frame_equal(out.scores[memories], base.scores[memories])
    # the baseline gives the zero-shot sub-score 1/3: the total moves by a third of its change
    np.testing.assert_allclose(out.scores["score"] - out.scores["zero_shot"] / 3, base.scores["score"] - base.scores["zero_shot"] / 3, atol=1e-6)
    assert not np.allclose(out.maps, base.maps, atol=1e-6)


def test_the_class_name_mode_chooses_the_name_in_the_prompts(world, backbone, monkeypatch):
    monkeypatch.setitem(class_names.READABLE_NAMES, CATEGORY, "spring clip")
    ids = read_split(world.splits["a1"]).test
    readable = world.score("anomalous_memory", FAST | {"class_name_mode": "readable"}, setting="a1", out=world.root / "scores" / "readable")
    verbatim = world.score("anomalous_memory", FAST | {"class_name_mode": "verbatim"}, setting="a1", out=world.root / "scores" / "verbatim")
    np.testing.assert_allclose(readable.scores["zero_shot"], expected_zero_shot(world, backbone, ids, "paper", 0.01, "normalised_mean", "spring clip"), atol=1e-5)
    np.testing.assert_allclose(verbatim.scores["zero_shot"], expected_zero_shot(world, backbone, ids, "paper", 0.01, "normalised_mean", CATEGORY), atol=1e-5)
    assert not np.allclose(readable.scores["zero_shot"], verbatim.scores["zero_shot"], atol=1e-4)


# --- scales and memories ------------------------------------------------------------------------------------


def baseline(n_scales: int) -> np.ndarray:
    """The paper's baseline: 1/3 on the zero-shot score, the other 2/3 spread evenly over both memories' scales."""
    return np.array([1 / 3] + [1 / (3 * n_scales)] * (2 * n_scales))


def test_the_window_sizes_choose_the_scales_and_the_baseline_weights(runs):
    base, out = runs(), runs({"window_sizes": [2, 3]})
    scales = ["patch", "w2", "w3"]
    assert [c for c in out.scores.columns if c.startswith(("reference_", "anomalous_"))] == sub_score_columns(scales)[1:]
    assert out.details["scorer_details"]["sub_scores"] == sub_score_columns(scales)
    assert sorted(memory(out)) == sorted(scales)
    pd.testing.assert_frame_equal(out.scores[sub_score_columns(scales)], base.scores[sub_score_columns(scales)])
    for run, n_scales in ((base, 4), (out, 3)):
        np.testing.assert_allclose(run.details["scorer_details"]["baseline_weights"], baseline(n_scales), atol=1e-12)
        total = run.scores[sub_score_columns(DEFAULT_SCALES[: n_scales])].to_numpy(np.float64) @ baseline(n_scales)
        np.testing.assert_allclose(run.scores["score"], total, atol=1e-5)
        np.testing.assert_allclose(run.scores["score_baseline"], total, atol=1e-5)
    assert not np.allclose(out.maps, base.maps, atol=1e-6)
    assert METHOD.features(method_params(METHOD, {"window_sizes": [2, 3]})).window_sizes == (2, 3)


def coverages(world: World, window_sizes: tuple[int, ...] = (2, 3, 7), grid: int = 7) -> dict[str, np.ndarray]:
    """Per scale, the defect share of each patch / window of the anomalous reference, from its mask's pixels."""
    split = read_split(world.splits["a1"])
    manifest = pd.read_csv(world.manifest).set_index("image_id")
    mask = np.array(Image.open(manifest.loc[split.anomalous_refs[0], "mask_path"])) > 0
    side = mask.shape[0] // grid
    assert mask.shape == (grid * side, grid * side)
    patches = mask.reshape(grid, side, grid, side).mean(axis=(1, 3))
    out = {"patch": patches.reshape(-1)}
    for k in window_sizes:
        out[f"w{k}"] = sliding_window_view(patches, (k, k)).mean(axis=(-2, -1)).reshape(-1)
    return out


def expected_sizes(coverage: np.ndarray, threshold: float, partial_windows: str) -> tuple[int, int]:
    """(anomalous, reference) memory sizes of one scale by the paper's rule and the documented fallbacks."""
    anomalous = coverage >= threshold
    if not anomalous.any():
        anomalous = coverage == coverage.max()
    normal = coverage == 0 if partial_windows == "exclude" else ~anomalous
    if not normal.any():
        candidates = ~anomalous if (~anomalous).any() else np.ones_like(anomalous)
        normal = candidates & (coverage == coverage[candidates].min())
    return int(anomalous.sum()), int(normal.sum())


@pytest.mark.parametrize("threshold", [0.3, 0.9])
def test_the_coverage_threshold_sizes_the_anomalous_memory_only(world, runs, threshold):
    base, out = runs(), runs({"coverage_threshold": threshold})
    cover = coverages(world)
    assert all(np.abs(c - threshold).min() > 1e-4 for c in cover.values()), "a coverage on the threshold: float order decides"
    sizes = {scale: expected_sizes(c, threshold, "exclude") for scale, c in cover.items()}
    assert {s: (m["n_anomalous"], m["n_normal"]) for s, m in memory(out).items()} == sizes
    assert sizes != {scale: expected_sizes(c, 0.5, "exclude") for scale, c in cover.items()}, "case cannot tell"
    # defect-free windows feed the reference memory whatever the threshold
    references = [f"reference_{s}" for s in DEFAULT_SCALES] + ["zero_shot"]
    pd.testing.assert_frame_equal(out.scores[references], base.scores[references])
    # the anomalous memories shrink as the threshold rises (subsets), so the nearest anomalous entry gets no closer
    anomalous = [f"anomalous_{s}" for s in DEFAULT_SCALES]
    low, high = (out, base) if threshold < 0.5 else (base, out)
    assert (high.scores[anomalous].to_numpy() <= low.scores[anomalous].to_numpy() + 1e-6).all()
    assert not np.allclose(high.scores[anomalous], low.scores[anomalous], atol=1e-6)


@pytest.mark.parametrize("threshold", [0.5, 0.3])
def test_partial_windows_normal_puts_the_touching_windows_into_the_reference_memory(world, runs, threshold):
    exclude, normal = runs({"coverage_threshold": threshold}), runs({"coverage_threshold": threshold, "partial_windows": "normal"})
    cover = coverages(world)
    assert {s: (m["n_anomalous"], m["n_normal"]) for s, m in memory(normal).items()} == {
        scale: expected_sizes(c, threshold, "normal") for scale, c in cover.items()
    }
    assert memory(normal) != memory(exclude)
    # a larger reference memory: no nearer-neighbour distance grows, the anomalous side stays as it is
    references = [f"reference_{s}" for s in DEFAULT_SCALES]
    assert (normal.scores[references].to_numpy() <= exclude.scores[references].to_numpy() + 1e-6).all()
    assert not np.allclose(normal.scores[references], exclude.scores[references], atol=1e-6)
    untouched = ["zero_shot"] + [f"anomalous_{s}" for s in DEFAULT_SCALES]
    pd.testing.assert_frame_equal(normal.scores[untouched], exclude.scores[untouched])


# --- weight search and report -------------------------------------------------------------------------------

# Two searches whose counts differ from each other and from the defaults (10 augmentations, 100 draws, three
# distributions, baseline weights).
SEARCHES = [
    {"distributions": ["normal", "uniform"], "score_weights": "uniform", "n_augmentations": 5, "n_draws": 7},
    {"distributions": ["student_t"], "score_weights": "student_t", "n_augmentations": 4, "n_draws": 3},
]


@pytest.fixture(scope="module")
def searches(world) -> list[tuple[ScoreOutputs, Path, list]]:
    """Each search's outputs, its score directory and the weights the fused map was built with (spied)."""
    results = []
    for i, params in enumerate(SEARCHES):
        seen: list = []
        original = scorer_module.fused_map
        scorer_module.fused_map = lambda maps, weights, seen=seen: seen.append(weights.numpy().copy()) or original(maps, weights)
        try:
            out_dir = world.root / "scores" / f"search{i}"
            results.append((world.score("anomalous_memory", params, setting="a1", out=out_dir), out_dir, seen))
        finally:
            scorer_module.fused_map = original
    return results


@pytest.mark.parametrize("case", range(len(SEARCHES)))
def test_the_weight_search_parameters_reach_the_validation(runs, searches, case):
    params = SEARCHES[case]
    out, _, fused_with = searches[case]
    base = runs()
    report = out.details["scorer_details"]["validation"]
    n_anomalous = (params["n_augmentations"] + 1) // 2
    assert (report["n_validation"], report["n_validation_anomalous"]) == (params["n_augmentations"], n_anomalous)
    assert report["n_draws"] == params["n_draws"]
    assert list(report["distributions"]) == params["distributions"]
    for entry in report["distributions"].values():
        assert len(entry["test_auroc_per_draw"]) == params["n_draws"] and 0 <= entry["draw_index"] < params["n_draws"]
    assert [c for c in out.scores.columns if c.startswith("score_")] == ["score_baseline"] + [f"score_{d}" for d in params["distributions"]]
    # the search never touches the sub-scores nor the baseline total
    names = sub_score_columns(DEFAULT_SCALES)
    pd.testing.assert_frame_equal(out.scores[names + ["score_baseline"]], base.scores[names + ["score_baseline"]])
    subs = out.scores[names].to_numpy(np.float64)
    for distribution in params["distributions"]:
        weights = np.array(report["distributions"][distribution]["weights"])
        np.testing.assert_allclose(out.scores[f"score_{distribution}"], subs @ weights, atol=1e-5)
    # ``weights`` picks the total of ``score`` and the weights of the fused map
    chosen = np.array(report["distributions"][params["score_weights"]]["weights"])
    assert out.details["scorer_details"]["score_weights"] == params["score_weights"]
    np.testing.assert_allclose(out.scores["score"], subs @ chosen, atol=1e-5)
    assert not np.allclose(out.scores["score"], out.scores["score_baseline"], atol=1e-4)
    assert len(fused_with) == 1
    np.testing.assert_allclose(fused_with[0], chosen, atol=1e-6)
    assert not np.allclose(out.maps, base.maps, atol=1e-4)
    assert METHOD.needs.min_validation_normals(method_params(METHOD, params)) == 1
    assert METHOD.needs.min_validation_normals(method_params(METHOD, FAST)) == 0


def test_table_1_compares_with_the_configured_baseline_scorer_and_setting(world, searches, tmp_path):
    out, out_dir, _ = searches[0]
    # one value per (scorer, setting), so a swapped or defaulted pair lands on another row's number
    values = {("winclip", "k1"): 0.6, ("winclip", "k2"): 0.7, ("wc_b", "k1"): 0.8, ("wc_b", "k2"): 0.9, ("anomalous_memory", "a1"): 0.5}
    rows = [{"dataset": "toy", "category": CATEGORY, "setting": setting, "run": 0, "scorer": scorer, "metric": "image_auroc",
             "value": value, "weights": "random", "environment": "test"} for (scorer, setting), value in values.items()]
    # the sub-score rows tables 2 and 4 read, from the metrics code
    sub_scores = pd.DataFrame(evaluate_run(out_dir / "run0.parquet", None, map_size=16, fpr_limit=0.3)).query("metric.str.contains(':')")
    pd.concat([pd.DataFrame(rows), sub_scores], ignore_index=True).to_csv(tmp_path / "metrics.csv", index=False)

    def table_1(params: dict) -> pd.Series:
        target = tmp_path / "_".join(params.values())
        filled = method_params(METHOD, FAST | params)
        write_anomalous_samples_report(ReportContext(
            metrics_csv=tmp_path / "metrics.csv", score_files=[out_dir / "run0.parquet"], detail_files=[out_dir / "run0.json"],
            manifests={"toy": world.manifest}, params=filled, tables_dir=target / "tables", figures_dir=target / "plots"))
        table = pd.read_csv(target / "tables" / "table1_one_sample.csv", dtype=str).set_index("category")
        return table.loc[CATEGORY]

    # dropping either name, or both, reads another row: (winclip, k2) 70, (wc_b, k1) 80, the defaults 60
    chosen = table_1({"baseline_scorer": "wc_b", "baseline_setting": "k2"})
    assert (chosen["WinCLIP+ (1 normal)"], chosen["ours (1 anomalous)"]) == ("90.00", "50.00")  # one run: no spread


# --- generated references (One-to-Normal's transfer) -------------------------------------------------------------


def test_the_generator_and_its_count_add_the_pool_images_to_the_reference_memory_only(world, runs):
    """The a1 run's pool: ``g0`` (an unused train normal) and ``g1`` (a copy of an anomalous test image). With both in the
    reference memory, that test image finds itself at every scale (distance 0); the anomalous memory and the zero-shot
    score do not move; each scale's memory grows by the pool images' patches or windows."""
    declared = METHOD.generated(world.params("anomalous_memory", {"generator": "gen_a"}))
    assert (declared.generator, declared.pool, declared.personalized) == ("gen_a", True, False)
    assert METHOD.generated(world.params("anomalous_memory", {})).generator is None
    pool = write_pool(world, WINDOW_SIZES, setting="a1")
    generated = {"generated_pool": pool["generated_pool"], "generated_pool_features": pool["generated_pool_features"]}
    alone = runs({})
    outs = {count: world.score("anomalous_memory", FAST | {"generator": "gen_a", "generated_references": count}, setting="a1", generated=generated,
                               out=world.root / "scores" / f"pool{count}") for count in (1, None)}
    references = [f"reference_{scale}" for scale in DEFAULT_SCALES]
    anomalous = [f"anomalous_{scale}" for scale in DEFAULT_SCALES]
    base = alone.scores.set_index("image_id")
    grid = 112 // 16  # the tiny CLIP's patch grid at 112 px
    windows = {"patch": grid * grid, **{f"w{k}": (grid - k + 1) ** 2 for k in WINDOW_SIZES}}
    for count, out in outs.items():
        joined = out.scores.set_index("image_id")
        pd.testing.assert_frame_equal(joined[anomalous + ["zero_shot"]], base[anomalous + ["zero_shot"]])
        assert (joined[references] <= base[references] + 1e-6).all().all()  # more memory: never farther
        n = 2 if count is None else 1
        assert out.details["scorer_details"]["generated_references"] == ["g0", "g1"][:n]
        sizes = out.details["scorer_details"]["reference_memory_sizes"]
        without = alone.details["scorer_details"]["reference_memory_sizes"]
        assert {scale: sizes[scale] - without[scale] for scale in sizes} == {scale: n * w for scale, w in windows.items()}
        copy = joined.loc[pool["copy_of"], references].to_numpy()
        assert (np.abs(copy) < 1e-5).all() == (count is None)
    assert base.loc[pool["copy_of"], "reference_patch"] > 1e-2  # without the pool, that image's patches are far from the memory
