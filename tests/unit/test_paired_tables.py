"""The statistics tables of score files: every cell recomputed here with scikit-learn on the same resamples."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from fsad.evaluation.paired_tables import (
    StatisticsOptions,
    defect_type_table,
    intervals_table,
    paired_rows,
    score_run,
    significance_table,
)
from fsad.evaluation.statistics import stratified_resamples
from fsad.score_files import write_score_table
from fsad.seeding import derive_seed

LABELS = np.array([0, 0, 0, 0, 1, 1, 1, 1])
DEFECTS = ["good"] * 4 + ["spot", "spot", "scratch", "scratch"]
OPTIONS = StatisticsOptions(confidence_intervals=True, fpr_at_95_tpr=True, paired_tests=True, per_defect_type=True, n_bootstrap=60)


def write_run(folder, scorer: str, run: int, scores: np.ndarray):
    frame = pd.DataFrame({"image_id": [f"i{k}" for k in range(8)], "label": LABELS, "defect_type": DEFECTS, "score": scores, "weights": "random"})
    keys = {"scorer": scorer, "method": "m", "dataset": "d", "category": "c", "setting": "k1", "run": run, "weights": "random"}
    path = folder / f"{scorer}_{run}.parquet"
    write_score_table(frame, keys, path)
    return path


@pytest.fixture
def runs(tmp_path):
    rng = np.random.default_rng(2)
    manifest = pd.DataFrame({"image_id": [f"i{k}" for k in range(8)], "mask_path": [""] * 8}).set_index("image_id")
    scores = {(s, r): rng.random(8) + (0.8 if s == "a" else 0.2) * LABELS for s in ("a", "b") for r in (0, 1)}
    return scores, [score_run(write_run(tmp_path, s, r, v), manifest, 5, OPTIONS) for (s, r), v in scores.items()]


def resampled_aurocs(scores: np.ndarray, run: int) -> np.ndarray:
    """AUROC of each resample, with the images repeated as drawn (sklearn on the expanded set)."""
    counts = stratified_resamples(LABELS, 60, np.random.default_rng(derive_seed(5, "bootstrap", "d", "c", "k1", run)))
    return np.array([roc_auc_score(np.repeat(LABELS, row), np.repeat(scores, row)) for row in counts])


def test_the_interval_is_the_percentile_interval_of_the_mean_over_runs_of_each_resample(runs):
    scores, scored = runs
    table = intervals_table(scored, OPTIONS)
    replicates = (resampled_aurocs(scores["a", 0], 0) + resampled_aurocs(scores["a", 1], 1)) / 2
    low, high = np.quantile(replicates, [0.025, 0.975]) * 100
    assert table.loc[("a", "k1"), "I-AUROC 95% CI"] == f"({low:.1f}, {high:.1f})"
    values = [roc_auc_score(LABELS, scores["a", r]) * 100 for r in (0, 1)]
    assert table.loc[("a", "k1"), "I-AUROC"] == f"{np.mean(values):.1f} ± {np.std(values):.1f}"
    assert table.loc[("a", "k1"), "P-AUROC"].startswith("n/a")  # no maps written


def test_the_paired_p_value_counts_the_resamples_on_the_far_side_of_zero(runs):
    scores, scored = runs
    pairs = paired_rows(scored, OPTIONS)
    differences = sum(resampled_aurocs(scores["a", r], r) - resampled_aurocs(scores["b", r], r) for r in (0, 1)) / 2
    p = min(1.0, 2 * min(np.sum(differences <= 0) + 1, np.sum(differences >= 0) + 1) / 61)
    (row,) = pairs.itertuples()
    assert (row.scorer_a, row.scorer_b) == ("a", "b") and row.p_value == pytest.approx(p)
    point = np.mean([roc_auc_score(LABELS, scores["a", r]) - roc_auc_score(LABELS, scores["b", r]) for r in (0, 1)])
    assert row.difference == pytest.approx(point)
    assert significance_table(pairs).loc[("k1", "a"), "b"].rstrip("*") == f"{p:.3f}"


def test_defect_type_auroc_pits_the_normals_against_one_type(runs):
    scores, scored = runs
    table = defect_type_table(scored)
    for defect, rows in (("spot", [4, 5]), ("scratch", [6, 7])):
        keep = [0, 1, 2, 3, *rows]
        values = [roc_auc_score(LABELS[keep], scores["b", r][keep]) * 100 for r in (0, 1)]
        assert table.loc[("c", defect), ("b", "k1")] == f"{np.mean(values):.1f} ± {np.std(values):.1f}"


def test_fpr_at_95_tpr_is_the_share_of_normals_above_the_lowest_anomaly(runs):
    scores, scored = runs
    values = [np.mean(scores["a", r][:4] >= scores["a", r][4:].min()) * 100 for r in (0, 1)]
    assert intervals_table(scored, OPTIONS).loc[("a", "k1"), "FPR@95TPR"] == f"{np.mean(values):.1f} ± {np.std(values):.1f}"
