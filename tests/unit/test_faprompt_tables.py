"""FAPrompt's tables from hand-made metrics rows: a dataset is the mean over its categories, pairs as the paper."""

from __future__ import annotations

import pandas as pd

from fsad.scorers.faprompt.tables import ablation_table, comparison_table

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
    # anomalyclip has no sdd: a dash there and in the mean, which would average other datasets
    assert list(table["anomalyclip"]) == ["–", "(60.0, 60.0)", "–"]


def test_pixel_table_lists_only_datasets_with_pixel_metrics():
    table = comparison_table(METRICS, ["faprompt"], ["sdd", "visa"], "zs", PIXEL)
    assert list(table["dataset"]) == ["visa", "mean"] and list(table["faprompt"]) == ["(96.0, 80.0)", "(96.0, 80.0)"]


def test_ablation_rows_are_the_mean_over_datasets_in_the_given_order():
    table = ablation_table(METRICS, [{"label": "Baseline", "scorer": "anomalyclip"}, {"label": "FAPrompt", "scorer": "faprompt"}], ["sdd", "visa"], "zs")
    assert list(table["model"]) == ["Baseline", "FAPrompt"]
    assert list(table["Image-level (AUROC, AP)"]) == ["(60.0, 60.0)", "(72.5, 65.0)"]
    assert list(table["Pixel-level (AUROC, PRO)"]) == ["–", "(96.0, 80.0)"]
