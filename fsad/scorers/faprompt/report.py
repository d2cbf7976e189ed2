"""The FAPrompt paper's tables from ``metrics.csv``, written as Markdown, CSV, LaTeX and HTML.

- Table 1: image-level (AUROC, AP) per dataset, this instance beside ``compare_scorers`` (e.g. AnomalyCLIP, WinCLIP);
- Table 2: pixel-level (AUROC, PRO), the same layout (datasets without masks have no pixel metrics);
- Table 3: the module ablation, one row per ``ablation`` entry (label, scorer instance), each cell the mean over
  the datasets of (AUROC, AP) and (AUROC, PRO).

A dataset's value is the mean over all its categories in each run, then the mean over runs; the mean over datasets
is taken per run as well. Percent, one decimal, as ``(a, b)`` pairs like the paper. Aggregation, missing values and
the files are those of :mod:`fsad.evaluation.tables`.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from fsad.evaluation.collect import read_metrics, read_score_files
from fsad.evaluation.tables import INCOMPLETE, MEAN_ROW, MISSING, NA_TEXT, category_means, format_cell, over_runs, percent, write_table
from fsad.scorers.faprompt.method import TABLES
from fsad.scorers.method import ReportContext

IMAGE_PAIR = ("image_auroc", "image_ap")
PIXEL_PAIR = ("pixel_auroc", "pixel_pro")


def _dataset_runs(metrics: pd.DataFrame, scorers: list[str], setting: str, pair: tuple[str, str]) -> pd.DataFrame:
    """Per scorer, metric, dataset and run: the mean over all of the dataset's categories (percent, with its ``na``)."""
    rows = percent(metrics[metrics["scorer"].isin(scorers) & (metrics["setting"] == setting) & metrics["metric"].isin(pair)])
    return category_means(rows, ["scorer", "metric", "dataset"], metrics[["dataset", "category"]])


def _cell(stats: pd.DataFrame, scorer: str, key: str, pair: tuple[str, str]) -> str:
    """The ``(a, b)`` text of one scorer and dataset (or mean row); ``–`` when it has no result at all."""
    found = stats[(stats["scorer"] == scorer) & (stats["dataset"] == key)].set_index("metric")
    if found.empty:
        return MISSING
    values = [format_cell(found.at[m, "mean"], na=found.at[m, "na"]) if m in found.index else NA_TEXT[INCOMPLETE] for m in pair]
    return values[0] if len(set(values)) == 1 and values[0] in NA_TEXT.values() else "(" + ", ".join(values) + ")"


def _over_datasets(per_run: pd.DataFrame, datasets: list[str]) -> pd.DataFrame:
    """Per scorer and metric, over runs of the per-run mean over ``datasets`` (all of them, or n/a)."""
    means = category_means(per_run, ["scorer", "metric"], pd.DataFrame({"dataset": datasets}), over="dataset")
    return over_runs(means, ["scorer", "metric"]).assign(dataset=MEAN_ROW)


def comparison_table(metrics: pd.DataFrame, scorers: list[str], datasets: list[str], setting: str, pair: tuple[str, str]) -> pd.DataFrame:
    """Rows: each dataset with values of the first scorer, then ``mean`` over those; columns: ``dataset`` and one per scorer.

    A scorer without results on a dataset gets ``–`` there, and its mean over the table's datasets is n/a.
    """
    per_run = _dataset_runs(metrics, scorers, setting, pair)
    per_run = per_run[per_run["dataset"].isin(datasets)]
    stats = over_runs(per_run, ["scorer", "metric", "dataset"])
    own = stats[(stats["scorer"] == scorers[0])]
    rows = [d for d in datasets if d in set(own["dataset"])]
    if rows:
        stats = pd.concat([stats, _over_datasets(per_run, rows)], ignore_index=True)
    table = {"dataset": [*rows, MEAN_ROW]}
    for scorer in scorers:
        table[scorer] = [_cell(stats, scorer, key, pair) for key in table["dataset"]]
    return pd.DataFrame(table)


def ablation_table(metrics: pd.DataFrame, rows: list[dict[str, str]], datasets: list[str], setting: str) -> pd.DataFrame:
    """One row per ``{label, scorer}``: the mean over the datasets of image (AUROC, AP) and pixel (AUROC, PRO).

    A pair's mean covers the datasets of ``datasets`` that hold that pair's metrics (pixel metrics need masks).
    """
    columns = {"Image-level (AUROC, AP)": IMAGE_PAIR, "Pixel-level (AUROC, PRO)": PIXEL_PAIR}
    scorers = [row["scorer"] for row in rows]
    cells = {title: {} for title in columns}
    for title, pair in columns.items():
        per_run = _dataset_runs(metrics, scorers, setting, pair)
        claimed = sorted(set(per_run["dataset"]) & set(datasets))
        if claimed:
            stats = _over_datasets(per_run[per_run["dataset"].isin(claimed)], claimed)
            cells[title] = {scorer: _cell(stats, scorer, MEAN_ROW, pair) for scorer in scorers}
    return pd.DataFrame(
        [{"model": row["label"], "scorer": row["scorer"], **{title: cells[title].get(row["scorer"], MISSING) for title in columns}} for row in rows]
    )


def write_report(ctx: ReportContext) -> list[Path]:
    """Write tables 1-3 of one FAPrompt/AnomalyCLIP instance under ``ctx.tables_dir``.

    The instance's own score files give its name, its datasets and its (one) setting; its parameters
    ``compare_scorers`` and ``ablation`` name the other instances.
    """
    scores = read_score_files(ctx.score_files)
    keys = scores[["scorer", "setting"]].drop_duplicates()
    if len(keys) != 1:
        raise ValueError(f"the FAPrompt tables read one scorer instance in one setting; these score files hold {keys.values.tolist()}")
    scorer, setting = keys.iloc[0]
    datasets = sorted(scores["dataset"].unique())
    metrics = read_metrics(ctx.metrics_csv)
    scorers = [scorer, *[s for s in ctx.params["compare_scorers"] if s != scorer]]
    ablation = ctx.params["ablation"] or [{"label": scorer, "scorer": scorer}]
    used = lambda names, pair: metrics[  # noqa: E731
        metrics["scorer"].isin(names) & (metrics["setting"] == setting) & metrics["dataset"].isin(datasets) & metrics["metric"].isin(pair)
    ]
    where = f"setting {setting}, datasets {', '.join(datasets)}"
    tables = [
        (comparison_table(metrics, scorers, datasets, setting, IMAGE_PAIR), f"Image-level (AUROC, AP) in % ({where})", used(scorers, IMAGE_PAIR)),
        (comparison_table(metrics, scorers, datasets, setting, PIXEL_PAIR), f"Pixel-level (AUROC, PRO) in % ({where}; datasets with masks)", used(scorers, PIXEL_PAIR)),
        (
            ablation_table(metrics, ablation, datasets, setting),
            f"Module ablation: mean over datasets of (AUROC, AP) and (AUROC, PRO) in % ({where})",
            used([row["scorer"] for row in ablation], IMAGE_PAIR + PIXEL_PAIR),
        ),
    ]
    own = used([scorer], IMAGE_PAIR)
    if own.empty:
        raise ValueError(f"metrics hold no image metrics of scorer {scorer!r} ({where}); run its evaluation first")
    written = []
    for name, (table, caption, rows) in zip(TABLES, tables, strict=True):
        notes = [] if not rows.empty else ["No pixel metrics: none of these datasets has anomaly masks."]
        written += write_table(table, ctx.table_files(name), caption, own if rows.empty else rows, notes)
    return written
