"""The FAPrompt paper's tables from ``metrics.csv``, written as Markdown, CSV and LaTeX.

- Table 1: image-level (AUROC, AP) per dataset, this instance beside ``compare_scorers`` (e.g. AnomalyCLIP, WinCLIP);
- Table 2: pixel-level (AUROC, PRO), the same layout (datasets without masks have no pixel metrics);
- Table 3: the module ablation, one row per ``ablation`` entry (label, scorer instance), each cell the mean over
  the datasets of (AUROC, AP) and (AUROC, PRO).

A dataset's value is the mean over its categories in each run (NaN if any category is NaN), then the mean over
runs; percent, one decimal, as ``(a, b)`` pairs like the paper. The weights provenance (and the random-weights
note) comes from the metrics rows each table reads (:func:`fsad.evaluation.anomalous_tables.write_table`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from fsad.evaluation.anomalous_tables import write_table
from fsad.evaluation.collect import read_metrics, read_score_files
from fsad.scorers.faprompt.method import TABLES
from fsad.scorers.method import ReportContext

IMAGE_PAIR = ("image_auroc", "image_ap")
PIXEL_PAIR = ("pixel_auroc", "pixel_pro")
MISSING = "–"
MEAN_ROW = "mean"


def dataset_values(metrics: pd.DataFrame, scorer: str, setting: str, metric: str) -> pd.Series:
    """Percent value per dataset of one scorer, setting and metric: the mean over categories per run, then over runs."""
    rows = metrics[(metrics["scorer"] == scorer) & (metrics["setting"] == setting) & (metrics["metric"] == metric)]
    per_run = rows.groupby(["dataset", "run"])["value"].agg(lambda v: v.astype(float).mean(skipna=False))
    return per_run.groupby("dataset").mean() * 100


def pair_text(first: float, second: float) -> str:
    """``"(91.9, 95.7)"``; ``n/a`` for a NaN value."""
    return "(" + ", ".join("n/a" if np.isnan(v) else f"{v:.1f}" for v in (first, second)) + ")"


def _pairs(metrics: pd.DataFrame, scorer: str, setting: str, pair: tuple[str, str]) -> pd.DataFrame:
    """Columns ``pair`` (percent), one row per dataset with both metrics."""
    return pd.concat({metric: dataset_values(metrics, scorer, setting, metric) for metric in pair}, axis=1).dropna(how="all")


def comparison_table(metrics: pd.DataFrame, scorers: list[str], datasets: list[str], setting: str, pair: tuple[str, str]) -> pd.DataFrame:
    """Rows: each dataset with values of the first scorer, then ``mean`` over those; columns: ``dataset`` and one per scorer.

    A scorer without values for a dataset gets ``–`` there and in the mean row.
    """
    values = {scorer: _pairs(metrics, scorer, setting, pair).reindex(datasets) for scorer in scorers}
    rows = [d for d in datasets if not values[scorers[0]].loc[d].isna().all()]
    table = {"dataset": [*rows, MEAN_ROW]}
    for scorer, frame in values.items():
        cells = [MISSING if frame.loc[d].isna().all() else pair_text(*frame.loc[d]) for d in rows]
        complete = rows and not frame.loc[rows].isna().all(axis=1).any()
        cells.append(pair_text(*frame.loc[rows].mean(skipna=False)) if complete else MISSING)
        table[scorer] = cells
    return pd.DataFrame(table)


def ablation_table(metrics: pd.DataFrame, rows: list[dict[str, str]], datasets: list[str], setting: str) -> pd.DataFrame:
    """One row per ``{label, scorer}``: the mean over ``datasets`` of image (AUROC, AP) and pixel (AUROC, PRO)."""
    columns = {"Image-level (AUROC, AP)": IMAGE_PAIR, "Pixel-level (AUROC, PRO)": PIXEL_PAIR}
    table = []
    for row in rows:
        entry = {"model": row["label"], "scorer": row["scorer"]}
        for title, pair in columns.items():
            frame = _pairs(metrics, row["scorer"], setting, pair).reindex(datasets).dropna(how="all")
            entry[title] = pair_text(*frame.mean(skipna=False)) if len(frame) else MISSING
        table.append(entry)
    return pd.DataFrame(table)


def write_report(ctx: ReportContext) -> list[Path]:
    """Write tables 1-3 of one FAPrompt/AnomalyCLIP instance under ``ctx.out_dir`` (Markdown, CSV, LaTeX).

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
        written += write_table(table, ctx.out_dir / name, caption, own if rows.empty else rows, notes)
    return written
