"""Result tables: mean ± std over runs in percent, the mean row, LaTeX escaping and the weights provenance note."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fsad.evaluation.summary import dataset_table, summary_table, write_dataset_tables, write_summary_tables
from fsad.evaluation.tables import NA_MISSING, NA_NOTES, NA_UNDEFINED, RANDOM_WEIGHTS_NOTE, TableFiles, format_cell

from .table_files import as_text, csv_table, markdown_table


def metric_rows(values: dict[tuple[str, str, int], float], weights: str = "laion400m_e31", dataset: str = "mvtec_ad",
                scorer: str = "win_clip", setting: str = "k1") -> list[dict]:
    """Rows of ``metrics.csv`` from ``{(category, metric, run): value}``."""
    return [
        {"dataset": dataset, "category": category, "setting": setting, "run": run, "scorer": scorer, "metric": metric,
         "value": value, "weights": weights}
        for (category, metric, run), value in values.items()
    ]


def two_categories_two_runs(weights: str = "laion400m_e31") -> pd.DataFrame:
    return pd.DataFrame(metric_rows({
        ("metal_nut", "image_auroc", 0): 0.90, ("metal_nut", "image_auroc", 1): 0.92,
        ("bottle", "image_auroc", 0): 0.80, ("bottle", "image_auroc", 1): 0.84,
    }, weights))


def test_format_cell_has_one_decimal_and_drops_a_missing_std():
    assert format_cell(93.14, 0.449) == "93.1 ± 0.4"
    assert format_cell(93.16) == "93.2" and format_cell(93.16, float("nan")) == "93.2"
    assert format_cell(float("nan"), float("nan")) == NA_UNDEFINED
    assert format_cell(81.644, 0.1, digits=2) == "81.64 ± 0.10"


def test_dataset_table_shows_percent_mean_std_over_runs_and_a_mean_row():
    table, stats = dataset_table(two_categories_two_runs(), "mvtec_ad")
    column = ("win_clip", "k1", "I-AUROC")
    assert list(table.index) == ["bottle", "metal_nut", "mean"]
    assert table.loc["metal_nut", column] == "91.0 ± 1.0"
    # mean row: per run the mean over categories (85, 88), then mean ± population std over runs
    assert table.loc["mean", column] == "86.5 ± 1.5"
    assert stats.loc[stats["category"] == "mean", "n_runs"].item() == 2


def test_a_nan_category_makes_the_dataset_mean_not_available():
    rows = two_categories_two_runs()
    rows.loc[rows["category"] == "bottle", "value"] = np.nan
    table, _ = dataset_table(rows, "mvtec_ad")
    assert table.loc["mean", ("win_clip", "k1", "I-AUROC")] == NA_UNDEFINED
    assert table.loc["bottle", ("win_clip", "k1", "I-AUROC")] == NA_UNDEFINED


def test_dataset_table_orders_metrics_like_the_papers_and_marks_missing_ones():
    rows = pd.concat([
        two_categories_two_runs(),
        pd.DataFrame(metric_rows({("bottle", "pixel_pro", 0): 0.5})),
    ])
    table, _ = dataset_table(rows, "mvtec_ad")
    assert [c[2] for c in table.columns] == ["I-AUROC", "PRO"]
    assert table.loc["metal_nut", ("win_clip", "k1", "PRO")] == "–"


def test_unknown_dataset_is_a_clear_error():
    with pytest.raises(ValueError, match="visa"):
        dataset_table(two_categories_two_runs(), "visa")


def test_table_files_escape_latex_and_state_real_weights_without_the_note(tmp_path):
    write_dataset_tables(two_categories_two_runs(), "mvtec_ad", TableFiles.named(tmp_path, "t"))
    tex = (tmp_path / "t.tex").read_text()
    assert r"metal\_nut" in tex and r"win\_clip" in tex and "metal_nut" not in tex
    assert r"91.0 $\pm$ 1.0" in tex and r"\toprule" in tex and r"\bottomrule" in tex
    assert "% Weights provenance: laion400m_e31" in tex
    md = (tmp_path / "t.md").read_text()
    assert "Weights provenance: laion400m_e31" in md and RANDOM_WEIGHTS_NOTE not in md
    csv = pd.read_csv(tmp_path / "t.csv", index_col=0)
    assert set(csv["weights"]) == {"laion400m_e31"}
    assert csv.loc["mean", "win_clip / k1 / I-AUROC"] == "86.5 ± 1.5"


def test_random_weights_put_a_loud_note_above_every_table_format(tmp_path):
    metrics = two_categories_two_runs(weights="random (fallback: laion400m_e31 not downloadable)")
    write_dataset_tables(metrics, "mvtec_ad", TableFiles.named(tmp_path, "t"))
    md = (tmp_path / "t.md").read_text()
    assert md.index(RANDOM_WEIGHTS_NOTE) < md.index("| category")
    tex = (tmp_path / "t.tex").read_text()
    assert tex.index(r"\textbf{Weights: random (fallback) --- these numbers are NOT comparable") < tex.index(r"\begin{tabular}")
    assert pd.read_csv(tmp_path / "t.csv")["weights"].str.contains("random").all()


def test_summary_table_has_one_row_per_dataset_scorer_and_setting(tmp_path):
    metrics = pd.concat([
        two_categories_two_runs(),
        pd.DataFrame(metric_rows({("bottle", "image_auroc", 0): 0.6, ("bottle", "pixel_auroc", 0): 0.7}, dataset="visa", setting="zs")),
    ])
    table = summary_table(metrics)
    assert list(table.index) == [("mvtec_ad", "win_clip", "k1"), ("visa", "win_clip", "zs")]
    assert list(table.columns) == ["I-AUROC", "P-AUROC", "weights"]
    assert table.loc[("visa", "win_clip", "zs"), "P-AUROC"] == "70.0"
    assert table.loc[("mvtec_ad", "win_clip", "k1"), "P-AUROC"] == "–"
    write_summary_tables(metrics, TableFiles.named(tmp_path, "s"))
    assert all((tmp_path / name).stat().st_size > 0 for name in ("s.md", "s.csv", "s.tex"))


def test_the_summary_table_carries_the_random_weights_note_when_any_row_used_random_weights(tmp_path):
    metrics = pd.concat([
        two_categories_two_runs(),
        pd.DataFrame(metric_rows({("bottle", "image_auroc", 0): 0.6}, weights="random (fallback: test)", dataset="visa", setting="zs")),
    ])
    write_summary_tables(metrics, TableFiles.named(tmp_path, "s"))
    md = (tmp_path / "s.md").read_text()
    assert f"**{RANDOM_WEIGHTS_NOTE}**" in md and md.index(RANDOM_WEIGHTS_NOTE) < md.index("| dataset")
    assert r"\textbf{Weights: random (fallback)" in (tmp_path / "s.tex").read_text()
    csv = pd.read_csv(tmp_path / "s.csv")
    assert csv.set_index("dataset").loc["visa", "weights"] == "random (fallback: test)"
    assert csv.set_index("dataset").loc["mvtec_ad", "weights"] == "laion400m_e31"


def one_run_per_setting() -> pd.DataFrame:
    """Two settings; ``zs`` ran once, so its cells are plain numbers such as ``"90.0"`` (which Markdown must not reformat)."""
    return pd.concat([
        two_categories_two_runs(),
        pd.DataFrame(metric_rows({("metal_nut", "image_auroc", 0): 0.90, ("bottle", "image_auroc", 0): 0.80,
                                  ("bottle", "pixel_pro", 0): 0.705}, setting="zs")),
    ])


def test_written_dataset_table_files_hold_the_returned_table_cell_for_cell(tmp_path):
    table = write_dataset_tables(one_run_per_setting(), "mvtec_ad", TableFiles.named(tmp_path, "t"))
    assert table.loc["mean", ("win_clip", "zs", "I-AUROC")] == "85.0" and table.loc["bottle", ("win_clip", "zs", "PRO")] == "70.5"
    flat = [" / ".join(column) for column in table.columns]
    expected = as_text(pd.DataFrame(table.to_numpy(), columns=flat).assign(category=list(table.index))[["category", *flat]])
    pd.testing.assert_frame_equal(markdown_table(tmp_path / "t.md"), expected)
    pd.testing.assert_frame_equal(csv_table(tmp_path / "t.csv"), expected.assign(weights="laion400m_e31"))


def test_written_summary_table_files_hold_the_returned_table_cell_for_cell(tmp_path):
    metrics = pd.concat([one_run_per_setting(), pd.DataFrame(metric_rows({("bottle", "image_auroc", 0): 0.6}, dataset="visa"))])
    table = write_summary_tables(metrics, TableFiles.named(tmp_path, "s"))
    assert list(table["I-AUROC"]) == ["86.5 ± 1.5", "85.0", "60.0"]
    keys = pd.DataFrame(list(table.index), columns=["dataset", "scorer", "setting"])
    csv = as_text(pd.concat([keys, table.reset_index(drop=True)], axis=1))
    pd.testing.assert_frame_equal(csv_table(tmp_path / "s.csv"), csv)
    markdown = csv.drop(columns=["dataset", "scorer", "setting"])
    markdown.insert(0, "dataset / scorer / setting", [" / ".join(key) for key in table.index])
    pd.testing.assert_frame_equal(markdown_table(tmp_path / "s.md"), markdown)


def test_a_category_without_a_result_in_a_run_makes_the_means_missing_and_the_files_say_why(tmp_path):
    """metal_nut has no result in run 1: the run's mean would be bottle's alone."""
    rows = two_categories_two_runs()
    rows = rows[~((rows["category"] == "metal_nut") & (rows["run"] == 1))]
    table, _ = dataset_table(rows, "mvtec_ad")
    assert table.loc["mean", ("win_clip", "k1", "I-AUROC")] == NA_MISSING
    assert table.loc["metal_nut", ("win_clip", "k1", "I-AUROC")] == "90.0"  # the one run it has
    assert summary_table(rows).loc[("mvtec_ad", "win_clip", "k1"), "I-AUROC"] == NA_MISSING
    write_summary_tables(rows, TableFiles.named(tmp_path, "s", tmp_path / "html"))
    for path in (tmp_path / "s.md", tmp_path / "html" / "s.html"):
        assert NA_NOTES[NA_MISSING] in path.read_text() and NA_NOTES[NA_UNDEFINED] not in path.read_text()
    assert r"n/a\textsuperscript{2}" in (tmp_path / "s.tex").read_text()


def test_means_of_no_rows_are_an_empty_frame_with_the_reason_column():
    """A report asks for pixel metrics of datasets that have none (no masks): no cells, not a crash."""
    from fsad.evaluation.tables import category_means, over_runs

    rows = two_categories_two_runs().iloc[0:0]
    per_run = category_means(rows, ["scorer", "metric", "dataset"], two_categories_two_runs()[["dataset", "category"]])
    assert per_run.empty and list(per_run.columns) == ["scorer", "metric", "dataset", "run", "value", "na"]
    assert over_runs(per_run, ["scorer", "metric", "dataset"]).empty


def test_a_nan_category_and_a_missing_one_in_one_cell_report_the_missing_one():
    from fsad.evaluation.tables import INCOMPLETE, UNDEFINED, category_means

    rows = pd.DataFrame(metric_rows({("bottle", "image_auroc", 0): np.nan, ("screw", "image_auroc", 0): 0.5,
                                     ("screw", "image_auroc", 1): 0.7, ("bottle", "image_auroc", 1): 0.9}))
    claimed = pd.DataFrame({"dataset": "mvtec_ad", "category": ["bottle", "screw", "cable"]})
    means = category_means(rows, ["scorer", "metric"], claimed).set_index("run")
    assert means.loc[0, "na"] == INCOMPLETE and np.isnan(means.loc[0, "value"])
    claimed = claimed[claimed["category"] != "cable"]
    means = category_means(rows, ["scorer", "metric"], claimed).set_index("run")
    assert means.loc[0, "na"] == UNDEFINED and means.loc[1, "na"] == "" and means.loc[1, "value"] == pytest.approx(0.8)
