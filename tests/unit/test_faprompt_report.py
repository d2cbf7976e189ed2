"""FAPrompt's tables from hand-made metrics rows: a dataset is the mean over its categories, pairs as the paper."""

from __future__ import annotations

import pandas as pd

from fsad.evaluation.tables import NA_MISSING, NA_NOTES, NA_UNDEFINED
from fsad.scorers.faprompt.report import ablation_table, comparison_table, write_report
from fsad.scorers.method import ReportContext
from fsad.score_files import write_score_table

IMAGE = ("image_auroc", "image_ap")
PIXEL = ("pixel_auroc", "pixel_pro")


def rows(scorer: str, dataset: str, category: str, setting: str = "zs", **values: float) -> list[dict]:
    return [
        {"dataset": dataset, "category": category, "setting": setting, "run": 0, "scorer": scorer, "metric": m, "value": v, "weights": "w"}
        for m, v in values.items()
    ]


METRICS = pd.DataFrame(
    rows("faprompt", "visa", "a", image_auroc=0.80, image_ap=0.90, pixel_auroc=0.95, pixel_pro=0.85)
    + rows("faprompt", "visa", "b", image_auroc=0.90, image_ap=0.70, pixel_auroc=0.97, pixel_pro=0.75)
    + rows("faprompt", "sdd", "c", image_auroc=0.60, image_ap=0.50)
    + rows("anomalyclip", "visa", "a", image_auroc=0.70, image_ap=0.60)
    + rows("anomalyclip", "visa", "b", image_auroc=0.50, image_ap=0.60)
    + rows("faprompt", "visa", "a", "k1", image_auroc=0.10, image_ap=0.10)  # another setting: never in the zs tables
)


def test_comparison_table_pairs_the_category_means_per_dataset_and_their_mean():
    table = comparison_table(METRICS, ["faprompt", "anomalyclip"], ["sdd", "visa"], "zs", IMAGE)
    assert list(table["dataset"]) == ["sdd", "visa", "mean"]
    # visa: (0.8 + 0.9) / 2 and (0.9 + 0.7) / 2; mean over sdd (60, 50) and visa (85, 80)
    assert list(table["faprompt"]) == ["(60.0, 50.0)", "(85.0, 80.0)", "(72.5, 65.0)"]
    # anomalyclip has no sdd: a dash there, and no mean over the two datasets (a mean of visa alone would pass for it)
    assert list(table["anomalyclip"]) == ["–", "(60.0, 60.0)", NA_MISSING]


def test_pixel_table_lists_only_datasets_with_pixel_metrics():
    table = comparison_table(METRICS, ["faprompt"], ["sdd", "visa"], "zs", PIXEL)
    assert list(table["dataset"]) == ["visa", "mean"] and list(table["faprompt"]) == ["(96.0, 80.0)", "(96.0, 80.0)"]


def test_ablation_rows_are_the_mean_over_datasets_in_the_given_order():
    table = ablation_table(METRICS, [{"label": "Baseline", "scorer": "anomalyclip"}, {"label": "FAPrompt", "scorer": "faprompt"}], ["sdd", "visa"], "zs")
    assert list(table["model"]) == ["Baseline", "FAPrompt"]
    # the Baseline has no sdd results: its mean over sdd and visa does not exist
    assert list(table["Image-level (AUROC, AP)"]) == [NA_MISSING, "(72.5, 65.0)"]
    assert list(table["Pixel-level (AUROC, PRO)"]) == ["–", "(96.0, 80.0)"]


def test_a_single_class_category_makes_its_dataset_and_the_mean_undefined_and_the_files_say_why(tmp_path):
    """visa/b has one class in run 0: its AUROC is NaN, so visa's mean over a and b, and the mean over datasets, are n/a."""
    metrics = METRICS.copy()
    metrics.loc[(metrics["dataset"] == "visa") & (metrics["category"] == "b") & (metrics["scorer"] == "faprompt") & (metrics["metric"] == "image_auroc"), "value"] = float("nan")
    table = comparison_table(metrics, ["faprompt"], ["sdd", "visa"], "zs", IMAGE)
    assert list(table["faprompt"]) == ["(60.0, 50.0)", f"({NA_UNDEFINED}, 80.0)", f"({NA_UNDEFINED}, 65.0)"]
    metrics.assign(environment="torch 2.14.1").to_csv(tmp_path / "metrics.csv", index=False)
    score_file = tmp_path / "visa.parquet"
    write_score_table(pd.DataFrame({"image_id": ["x"], "label": [0], "score": [0.1], "weights": "w"}),
                      {"scorer": "faprompt", "method": "faprompt", "dataset": "visa", "category": "a", "setting": "zs", "run": 0, "weights": "w"}, score_file)
    ctx = ReportContext(metrics_csv=tmp_path / "metrics.csv", score_files=[score_file], detail_files=[], manifests={},
                        params={"compare_scorers": [], "ablation": []}, tables_dir=tmp_path / "tables", figures_dir=tmp_path / "plots",
                        html_dir=tmp_path / "html")
    write_report(ctx)
    for suffix in (".md", ".tex"):
        text = (tmp_path / "tables" / f"table1_image{suffix}").read_text()
        assert ("undefined for a category it covers" in text) and ("has no result" not in text), suffix
    assert NA_NOTES[NA_UNDEFINED] in (tmp_path / "html" / "table1_image.html").read_text()
