"""The fusion and the statistics tables through the workflow, on tests/workflow/configs/fusion.yaml (WinCLIP+ and
PatchCore fused on the synthetic defects, two k1 runs): every number recomputed here from the members' files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from fsad.evaluation.collect import read_maps, read_metrics
from fsad.seeding import derive_seed

from .conftest import ROOT, snakemake

pytestmark = pytest.mark.slow
CONFIG = ROOT / "tests" / "workflow" / "configs" / "fusion.yaml"
MEMBERS = ["winclip", "patchcore"]
RUNS = [0, 1]


@pytest.fixture(scope="module")
def fusion_run(tmp_path_factory) -> Path:
    workdir = tmp_path_factory.mktemp("fusion")
    snakemake(workdir, "--cores", "2", configfiles=(CONFIG,))
    return workdir / "results"


def files(results: Path, scorer: str, run: int, suffix: str) -> Path:
    return results / "scores" / scorer / "synthetic" / "textile" / "k1" / f"run{run}{suffix}"


@pytest.mark.parametrize("run", RUNS)
def test_the_fused_score_is_the_weighted_sum_of_the_members_scores_z_scored_on_their_validation_scores(fusion_run, run):
    details = json.loads(files(fusion_run, "fusion", run, ".json").read_text())["scorer_details"]
    fused = pd.read_parquet(files(fusion_run, "fusion", run, ".parquet"))
    columns = []
    for member in MEMBERS:
        validation = np.array(json.loads(files(fusion_run, member, run, ".json").read_text())["validation_set"]["score"])
        test = pd.read_parquet(files(fusion_run, member, run, ".parquet"))
        assert list(test["image_id"]) == list(fused["image_id"])
        columns.append((test["score"].to_numpy() - validation.mean()) / validation.std())
    columns = np.stack(columns, axis=1)
    weights = np.array(details["weights"]["uniform"])
    assert fused["score"].to_numpy() == pytest.approx(columns @ weights, abs=1e-4)
    assert fused["score_equal"].to_numpy() == pytest.approx(columns.mean(axis=1), abs=1e-4)


@pytest.mark.parametrize("run", RUNS)
def test_the_chosen_weights_have_the_best_validation_auroc_of_the_draws_and_no_test_label_picks_them(fusion_run, run):
    report = json.loads(files(fusion_run, "fusion", run, ".json").read_text())["scorer_details"]["validation"]
    sets = [json.loads(files(fusion_run, m, run, ".json").read_text())["validation_set"] for m in MEMBERS]
    assert sets[0]["image_ids"] == sets[1]["image_ids"]  # every member scored the same validation images
    labels = np.array(sets[0]["labels"])
    assert labels.sum() == 3 and (labels == 0).sum() == 3  # the validation normal, 2 augmentations, 3 defects
    assert not set(sets[0]["sources"]) & set(pd.read_parquet(files(fusion_run, "fusion", run, ".parquet"))["image_id"])
    columns = np.stack([(np.array(s["score"]) - np.mean(s["score"])) / np.std(s["score"]) for s in sets], axis=1)
    seed = json.loads((fusion_run / "splits" / "synthetic" / "textile" / "k1" / f"run{run}.json").read_text())["seed"]
    for distribution in ("uniform", "normal"):
        # the documented draws: derive_seed(split seed, "weights", distribution), L1-normalised
        rng = np.random.default_rng(derive_seed(seed, "weights", distribution))
        draws = rng.uniform(0, 1, (50, 2)) if distribution == "uniform" else rng.standard_normal((50, 2))
        draws /= np.abs(draws).sum(axis=1, keepdims=True)
        aurocs = [roc_auc_score(labels, columns @ d) for d in draws]
        chosen = report["distributions"][distribution]
        assert chosen["validation_auroc"] == pytest.approx(max(aurocs), abs=1e-6)
        assert chosen["weights"] == pytest.approx(draws[chosen["draw_index"]], abs=1e-5)
    assert report["n_validation"] == 6


def test_the_fused_maps_are_the_weighted_normalised_member_maps(fusion_run):
    details = json.loads(files(fusion_run, "fusion", 0, ".json").read_text())["scorer_details"]
    ids = list(pd.read_parquet(files(fusion_run, "fusion", 0, ".parquet"))["image_id"])
    expected = np.zeros((len(ids), 64, 64))
    for member, weight in zip(MEMBERS, details["weights"]["uniform"]):
        import h5py

        with h5py.File(files(fusion_run, member, 0, ".maps.h5"), "r") as h5:
            validation_maps = h5["validation_maps"][()].astype(np.float64)
        expected += weight * (read_maps(files(fusion_run, member, 0, ".maps.h5"), ids, 64) - validation_maps.mean()) / validation_maps.std()
    assert read_maps(files(fusion_run, "fusion", 0, ".maps.h5"), ids, 64) == pytest.approx(expected, abs=2e-2)  # float16 maps


def test_the_members_table_shows_each_members_own_auroc_and_the_fused_one(fusion_run):
    metrics = read_metrics(fusion_run / "metrics" / "metrics.csv")
    table = pd.read_csv(fusion_run / "tables" / "fusion" / "members.csv")
    row = table[(table["dataset"] == "synthetic") & (table["setting"] == "k1")].iloc[0]
    for column, scorer in ((m, m) for m in MEMBERS):
        values = metrics[(metrics["scorer"] == scorer) & (metrics["metric"] == "image_auroc")]["value"] * 100
        assert row[column] == f"{values.mean():.1f} ± {values.std(ddof=0):.1f}"
    fused = metrics[(metrics["scorer"] == "fusion") & (metrics["metric"] == "image_auroc")]["value"] * 100
    assert row["fused (uniform)"] == f"{fused.mean():.1f} ± {fused.std(ddof=0):.1f}"


def test_the_intervals_table_holds_the_metrics_mean_and_an_interval_around_it(fusion_run):
    metrics = read_metrics(fusion_run / "metrics" / "metrics.csv")
    table = pd.read_csv(fusion_run / "tables" / "statistics" / "synthetic" / "intervals.csv").set_index("scorer")
    for scorer in [*MEMBERS, "fusion"]:
        for metric, column in (("image_auroc", "I-AUROC"), ("pixel_auroc", "P-AUROC")):
            values = metrics[(metrics["scorer"] == scorer) & (metrics["metric"] == metric)]["value"] * 100
            assert table.loc[scorer, column] == f"{values.mean():.1f} ± {values.std(ddof=0):.1f}"
            low, high = (float(v) for v in table.loc[scorer, f"{column} 95% CI"].strip("()").split(","))
            assert low <= values.mean() + 0.05 and values.mean() - 0.05 <= high


def test_the_paired_table_differences_are_the_differences_of_the_mean_aurocs(fusion_run):
    metrics = read_metrics(fusion_run / "metrics" / "metrics.csv")
    mean = lambda s: metrics[(metrics["scorer"] == s) & (metrics["metric"] == "image_auroc")]["value"].mean() * 100  # noqa: E731
    table = pd.read_csv(fusion_run / "tables" / "statistics" / "synthetic" / "paired.csv")
    assert len(table) == 3  # fusion, patchcore and winclip pairwise
    for _, row in table.iterrows():
        assert float(row["ΔI-AUROC"]) == pytest.approx(mean(row["scorer_a"]) - mean(row["scorer_b"]), abs=0.051)
        assert 0 < float(str(row["p"]).rstrip("*")) <= 1
