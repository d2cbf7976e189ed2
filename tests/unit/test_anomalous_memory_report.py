"""Anomalous-samples tables and defect-size figure, from hand-made score files, details and metrics."""

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from fsad.evaluation.collect import evaluate_run, read_score_files
from fsad.evaluation.tables import NA_MISSING, NA_UNDEFINED, RANDOM_WEIGHTS_NOTE, TableFiles, format_cell, write_table
from fsad.scorers.anomalous_memory.method import TABLES
from fsad.scorers.anomalous_memory.report import (
    defect_size_figure,
    defect_sizes,
    one_sample_table,
    sub_score_table_test_set,
    sub_score_table_validation_set,
    tie_counts,
    weight_validation_table,
    write_report,
)
from fsad.fusion.score_weights import TIE_BREAK
from fsad.score_files import write_score_table
from fsad.scorers.method import ReportContext

from .table_files import as_text, csv_table, markdown_table

LABELS = [0, 0, 1, 1]
PRETRAINED = "laion400m_e31"
RANDOM = "random (fallback: laion400m_e31 not downloadable)"


def write_scores(root, category, run, perfect, weights=PRETRAINED):
    """Four test images; ``zero_shot`` separates them, ``anomalous_patch`` inverts them."""
    path = root / "anomalous_memory" / "visa" / category / "a1" / f"run{run}.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    good = np.array([0.1, 0.2, 0.8, 0.9])
    frame = pd.DataFrame({
        "image_id": [f"{category}{i}" for i in range(4)], "label": LABELS,
        "zero_shot": good, "anomalous_patch": good[::-1],
        "score": good if perfect else good[::-1], "score_baseline": good if perfect else good[::-1], "score_uniform": good, "weights": weights,
    })
    keys = {"scorer": "anomalous_memory", "method": "anomalous_memory", "dataset": "visa", "category": category,
            "setting": "a1", "run": run, "weights": weights}
    write_score_table(frame, keys, path)
    return path


def details(category, run, oracle=1.0, n_tied=None, weights=PRETRAINED):
    uniform = {"oracle_test_auroc": oracle, "test_auroc_per_draw": [0.6, 0.8]}
    if n_tied is not None:
        uniform["n_tied"] = n_tied
    return {
        "dataset": "visa", "category": category, "setting": "a1", "run": run, "weights": weights,
        "scorer_details": {"sub_scores": ["zero_shot", "anomalous_patch"], "validation": {
            "sub_scores": ["zero_shot", "anomalous_patch"],
            "validation_sub_score_auroc": {"zero_shot": 0.5, "anomalous_patch": 1.0},
            "n_draws": 2,
            "distributions": {"uniform": uniform},
        }},
    }


def evaluated(paths) -> pd.DataFrame:
    """The metrics code's rows of the score files (``image_auroc:<column>`` for each sub-score column)."""
    return pd.concat([pd.DataFrame(evaluate_run(path, None, map_size=16, fpr_limit=0.3)) for path in paths], ignore_index=True)


@pytest.fixture
def score_paths(tmp_path):
    return [write_scores(tmp_path, c, r, perfect=(r == 0)) for c in ("pcb1", "pcb2") for r in (0, 1)]


@pytest.fixture
def scores(score_paths):
    return read_score_files(score_paths)


@pytest.fixture
def metrics(score_paths):
    return evaluated(score_paths)


def test_score_files_get_their_keys_from_their_metadata(scores, tmp_path):
    assert set(scores["category"]) == {"pcb1", "pcb2"} and set(scores["run"]) == {0, 1}
    assert set(scores["scorer"]) == {"anomalous_memory"} and set(scores["setting"]) == {"a1"}
    pd.DataFrame({"image_id": ["x"], "label": [0], "score": [0.1]}).to_parquet(tmp_path / "bare.parquet")
    with pytest.raises(ValueError, match="no fsad keys"):
        read_score_files([tmp_path / "bare.parquet"])


def test_sub_score_aurocs_on_the_test_set_per_category(metrics):
    table = sub_score_table_test_set(metrics, "anomalous_memory", "a1", ["zero_shot", "anomalous_patch"])
    assert list(table.columns) == ["dataset", "category", "zero_shot", "anomalous_patch"]
    assert list(table["zero_shot"]) == ["100.00 ± 0.00"] * 2
    assert list(table["anomalous_patch"]) == ["0.00 ± 0.00"] * 2


def test_sub_score_aurocs_on_the_validation_set_come_from_the_details():
    table = sub_score_table_validation_set([details("pcb1", 0), details("pcb1", 1)])
    assert table.loc[0, "anomalous_patch"] == "100.00 ± 0.00" and table.loc[0, "zero_shot"] == "50.00 ± 0.00"


def test_weight_validation_table_rows_and_run_statistics(metrics):
    entries = [details(c, r, oracle=0.9 + 0.1 * r) for c in ("pcb1", "pcb2") for r in (0, 1)]
    table = weight_validation_table(metrics, "anomalous_memory", "a1", entries).set_index("weighting")["visa"]
    assert table["Baseline weights"] == "50.00 ± 50.00"  # 100 in run 0, 0 in run 1
    assert table["Random uniform weights (one draw)"] == "70.00 ± 10.00"
    assert table["Oracle: Monte-Carlo on test set (uniform)"] == "95.00 ± 5.00"
    assert table["Monte-Carlo on validation set (uniform)"] == "100.00 ± 0.00"


def test_one_sample_table_compares_both_pairs_with_a_dataset_mean():
    rows = []
    for run, (normal, anomalous) in enumerate([(0.5, 0.9), (0.7, 0.9)]):
        for scorer, setting, value in [("winclip", "k1", normal), ("anomalous_memory", "a1", anomalous)]:
            rows += [{"dataset": "visa", "category": c, "setting": setting, "run": run, "scorer": scorer,
                      "metric": "image_auroc", "value": value} for c in ("pcb1", "pcb2")]
    table = one_sample_table(pd.DataFrame(rows)).set_index(["dataset", "category"])
    assert table.loc[("visa", "mean"), "WinCLIP+ (1 normal)"] == "60.00 ± 10.00"
    assert table.loc[("visa", "pcb1"), "ours (1 anomalous)"] == "90.00 ± 0.00"
    with pytest.raises(ValueError, match="run its evaluation first"):
        one_sample_table(pd.DataFrame(rows), metric="pixel_auroc")


def test_tables_are_written_as_markdown_csv_and_latex_holding_the_frame_cell_for_cell(tmp_path, scores, metrics):
    table = sub_score_table_test_set(metrics, "anomalous_memory", "a1", ["zero_shot"]).assign(single_run=["81.60", "90.00"])
    paths = write_table(table, TableFiles.named(tmp_path / "tables", "sub"), "Sub-scores", scores)
    assert sorted(p.suffix for p in paths) == [".csv", ".md", ".tex"]
    assert "Sub-scores" in (tmp_path / "tables" / "sub.md").read_text()
    # cells are written as they are: "81.60" stays "81.60" (not the number 81.6)
    pd.testing.assert_frame_equal(markdown_table(tmp_path / "tables" / "sub.md"), as_text(table))
    pd.testing.assert_frame_equal(csv_table(tmp_path / "tables" / "sub.csv"), as_text(table).assign(weights=PRETRAINED))
    assert format_cell(float("nan"), digits=2) == NA_UNDEFINED and format_cell(81.644, digits=2) == "81.64"


def test_tie_counts_average_the_tied_draws_over_categories_and_runs():
    entries = [details("pcb1", 0, n_tied=2), details("pcb1", 1, n_tied=1), details("pcb2", 0, n_tied=2), details("pcb2", 1, n_tied=1)]
    counts = tie_counts(entries).set_index(["dataset", "distribution"])
    assert counts.loc[("visa", "uniform"), "mean_tied"] == 1.5
    assert counts.loc[("visa", "uniform"), "max_tied"] == 2 and counts.loc[("visa", "uniform"), "n_runs"] == 4


def write_report_inputs(tmp_path, weights, metrics_weights=None):
    """Score files, details and metrics (``metrics_weights``, default ``weights``) of two VisA categories over two runs, and a manifest with masks."""
    score_files = [write_scores(tmp_path / "scores", c, r, perfect=(r == 0), weights=weights) for c in ("pcb1", "pcb2") for r in (0, 1)]
    detail_files = []
    for c in ("pcb1", "pcb2"):
        for r in (0, 1):
            path = tmp_path / "details" / f"{c}_run{r}.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(details(c, r, n_tied=1 + r, weights=weights)))
            detail_files.append(path)
    rows = [{"dataset": "visa", "category": c, "setting": setting, "run": r, "scorer": scorer, "metric": "image_auroc",
             "value": 0.8, "weights": metrics_weights or weights, "environment": "torch 2.14.1"}
            for c in ("pcb1", "pcb2") for r in (0, 1) for scorer, setting in (("winclip", "k1"), ("anomalous_memory", "a1"))]
    sub_scores = evaluated(score_files).query("metric.str.contains(':')").assign(weights=metrics_weights or weights, environment="torch 2.14.1")
    pd.concat([pd.DataFrame(rows), sub_scores], ignore_index=True).to_csv(tmp_path / "metrics.csv", index=False)
    mask = np.zeros((10, 20), dtype=np.uint8)
    mask[:5, :4] = 255
    Image.fromarray(mask).save(tmp_path / "m.png")
    pd.DataFrame({"image_id": ["x"], "category": ["pcb1"], "split": ["test"], "label": [1], "defect_type": ["bent"],
                  "image_path": ["/x.png"], "mask_path": [str(tmp_path / "m.png")]}).to_csv(tmp_path / "manifest.csv", index=False)
    return ReportContext(metrics_csv=tmp_path / "metrics.csv", score_files=score_files, detail_files=detail_files,
                manifests={"visa": tmp_path / "manifest.csv"}, params={"baseline_scorer": "winclip", "baseline_setting": "k1"},
                tables_dir=tmp_path / "tables", figures_dir=tmp_path / "plots")


def test_report_writes_every_table_named_in_TABLES(tmp_path):
    written = write_report(write_report_inputs(tmp_path, PRETRAINED))
    expected = {tmp_path / "tables" / f"{name}.{ext}" for name in TABLES for ext in ("md", "csv", "tex")}
    assert set(written) == expected | {tmp_path / "plots" / "defect_size.png"}
    for name in TABLES:
        assert RANDOM_WEIGHTS_NOTE not in (tmp_path / "tables" / f"{name}.md").read_text()
        assert f"Weights provenance: {PRETRAINED}" in (tmp_path / "tables" / f"{name}.md").read_text()
        assert set(pd.read_csv(tmp_path / "tables" / f"{name}.csv")["weights"]) == {PRETRAINED}
    assert "Baseline weights" in set(pd.read_csv(tmp_path / "tables" / "table4_weight_validation.csv")["weighting"])
    tex = (tmp_path / "tables" / "table2_sub_scores_test.tex").read_text()
    assert r"zero\_shot" in tex and r"$\pm$" in tex and r"AUROC (\%)" in tex


def test_every_anomalous_samples_table_says_when_its_rows_used_random_weights(tmp_path):
    write_report(write_report_inputs(tmp_path, RANDOM))
    for name in TABLES:
        md = (tmp_path / "tables" / f"{name}.md").read_text()
        assert f"**{RANDOM_WEIGHTS_NOTE}**" in md and md.index(RANDOM_WEIGHTS_NOTE) < md.index("|")
        tex = (tmp_path / "tables" / f"{name}.tex").read_text()
        assert tex.index(r"\textbf{Weights: random (fallback) --- these numbers are NOT comparable") < tex.index(r"\begin{tabular}")
        assert pd.read_csv(tmp_path / "tables" / f"{name}.csv")["weights"].str.contains("random").all()


def test_every_written_report_table_holds_the_frame_it_comes_from_cell_for_cell(tmp_path):
    inputs = write_report_inputs(tmp_path, PRETRAINED)
    write_report(inputs)
    metrics = pd.read_csv(inputs.metrics_csv)
    entries = [json.loads(path.read_text()) for path in inputs.detail_files]
    frames = {
        "table1_one_sample": one_sample_table(pd.read_csv(inputs.metrics_csv)),
        "table2_sub_scores_test": sub_score_table_test_set(metrics, "anomalous_memory", "a1", ["zero_shot", "anomalous_patch"]),
        "table3_sub_scores_validation": sub_score_table_validation_set(entries),
        "table4_weight_validation": weight_validation_table(metrics, "anomalous_memory", "a1", entries),
    }
    assert list(frames) == list(TABLES)
    for name, frame in frames.items():
        written = tmp_path / "tables" / name
        pd.testing.assert_frame_equal(markdown_table(written.with_suffix(".md")), as_text(frame), obj=f"{name}.md")
        pd.testing.assert_frame_equal(csv_table(written.with_suffix(".csv")), as_text(frame).assign(weights=PRETRAINED), obj=f"{name}.csv")
    # hand values: every metric is 0.8; the baseline separates the test images in run 0 and inverts them in run 1
    table1 = markdown_table(tmp_path / "tables" / "table1_one_sample.md").set_index(["dataset", "category"])
    assert table1.loc[("visa", "mean"), "ours (1 anomalous)"] == "80.00 ± 0.00"
    table4 = csv_table(tmp_path / "tables" / "table4_weight_validation.csv").set_index("weighting")
    assert table4.loc["Baseline weights", "visa"] == "50.00 ± 50.00"


def test_table4_states_the_tie_rule_and_the_mean_number_of_tied_draws_under_the_table(tmp_path):
    write_report(write_report_inputs(tmp_path, PRETRAINED))
    md = (tmp_path / "tables" / "table4_weight_validation.md").read_text()
    below = md[md.rindex("|"):]
    assert TIE_BREAK in below
    # n_tied is 1 in run 0 and 2 in run 1 of both categories: mean 1.5 of 2 draws
    assert "(uniform): visa 1.5 of 2 (max 2)" in below
    tex = (tmp_path / "tables" / "table4_weight_validation.tex").read_text()
    assert tex.index("visa 1.5 of 2") > tex.index(r"\end{tabular}")


def test_defect_sizes_are_mask_areas_and_the_figure_is_written(tmp_path):
    mask = np.zeros((10, 20), dtype=np.uint8)
    mask[:5, :4] = 255
    Image.fromarray(mask).save(tmp_path / "m.png")
    manifest = pd.DataFrame({
        "category": ["a", "a", "b"], "image_id": ["x", "y", "z"], "label": [1, 0, 1],
        "defect_type": ["scratch", "good", "hole"], "mask_path": [str(tmp_path / "m.png"), "", str(tmp_path / "m.png")],
    })
    sizes = defect_sizes(manifest)
    assert list(sizes["image_id"]) == ["x", "z"] and np.allclose(sizes["relative_size"], 0.1)
    figure = defect_size_figure(sizes, tmp_path / "plots" / "defect_sizes.png")
    assert figure.stat().st_size > 0


def test_only_the_table_built_from_random_weight_rows_carries_the_note(tmp_path):
    write_report(write_report_inputs(tmp_path, PRETRAINED, metrics_weights=RANDOM))
    labelled = {name for name in TABLES if RANDOM_WEIGHTS_NOTE in (tmp_path / "tables" / f"{name}.md").read_text()}
    # tables 1, 2 and 4 are built from metrics rows; table 3 from the (pretrained) details alone
    assert labelled == {"table1_one_sample", "table2_sub_scores_test", "table4_weight_validation"}


def test_a_single_class_category_makes_the_dataset_means_undefined_and_a_missing_one_makes_them_missing(tmp_path):
    """The measured disagreement: a one-class category printed 80.00 ± 0.00, a mean of two of three categories."""
    rows = [{"dataset": "visa", "category": c, "setting": setting, "run": r, "scorer": scorer, "metric": "image_auroc", "value": v}
            for c, v in (("pcb1", 0.8), ("pcb2", 0.8), ("pcb3", float("nan"))) for r in (0, 1)
            for scorer, setting in (("winclip", "k1"), ("anomalous_memory", "a1"))]
    metrics = pd.DataFrame(rows)
    table = one_sample_table(metrics).set_index(["dataset", "category"])
    assert table.loc[("visa", "mean"), "ours (1 anomalous)"] == NA_UNDEFINED
    assert table.loc[("visa", "pcb3"), "ours (1 anomalous)"] == NA_UNDEFINED
    assert table.loc[("visa", "pcb1"), "ours (1 anomalous)"] == "80.00 ± 0.00"  # two runs: their spread
    one_run = one_sample_table(metrics[(metrics["run"] == 0) & (metrics["category"] != "pcb3")]).set_index(["dataset", "category"])
    assert one_run.loc[("visa", "mean"), "ours (1 anomalous)"] == "80.00"  # one run has no spread to show
    missing = metrics[~((metrics["scorer"] == "winclip") & (metrics["category"] == "pcb2"))].dropna()
    table = one_sample_table(missing).set_index(["dataset", "category"])
    assert table.loc[("visa", "mean"), "WinCLIP+ (1 normal)"] == NA_MISSING
    assert table.loc[("visa", "pcb2"), "WinCLIP+ (1 normal)"] == "–"
