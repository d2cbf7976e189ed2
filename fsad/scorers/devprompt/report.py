"""The ``devprompt`` report: per-category AUROC beside other instances (the paper's Tables 1 and 2) and the
sensitivity tables of lambda, K and a (Tables 3-5), from ``metrics.csv``.

Rows are this instance's (dataset, setting, category) results, each dataset closed by its ``mean`` row (per run the
mean over its categories, NaN if any category is); cells are AUROC in percent, mean ± std over runs (std only
with two runs or more). Columns are scorer instances: those of ``compare_with`` and this one, or for a
sensitivity table this one and the sweep instances of ``sensitivity``, one column per value of the swept
parameter. Missing results are ``–``. The image table adds the instance's ``sub_scores`` (image AUROC of each
sub-score column, e.g. PromptAD's textual and visual branches ``textual_global`` and ``visual_max``).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from fsad.evaluation.collect import read_metrics
from fsad.evaluation.tables import MEAN_ROW, MISSING, mean_std_cells, percent, write_table
from fsad.score_files import read_score_keys
from fsad.scorers.method import ReportContext

DIGITS = 2
ROW_KEYS = ["dataset", "setting", "category"]
METRIC_LABELS = {"pixel_auroc": "pixel AUROC", "image_auroc": "image AUROC"}
# swept parameter -> (table, column label of a value, caption)
SENSITIVITY = {
    "lambda_dev": ("sensitivity_lambda", lambda v: f"λ = {v:g}", "Impact of the deviation coefficient λ"),
    "topk_ratio": ("sensitivity_topk", lambda v: f"K = {100 * v:g} %", "Impact of the Top-K share K"),
    "margin": ("sensitivity_margin", lambda v: f"a = {v:g}", "Impact of the confidence margin a"),
}


def instance_cells(metrics: pd.DataFrame, scorer: str, metric: str, claimed: pd.DataFrame | None = None) -> pd.Series:
    """Text per (dataset, setting, category) of one scorer instance, with a ``mean`` row per dataset and setting.

    ``claimed`` (``dataset, setting, category``) are the categories each mean covers (default: the instance's own).
    """
    rows = percent(metrics[(metrics["scorer"] == scorer) & (metrics["metric"] == metric)])
    return mean_std_cells(rows, ["dataset", "setting"], rows[ROW_KEYS] if claimed is None else claimed, DIGITS)


def comparison_table(metrics: pd.DataFrame, columns: dict[str, str | tuple[str, str]], own: str, metric: str) -> pd.DataFrame:
    """Rows of instance ``own``'s results; one text column per ``label -> scorer`` of ``columns`` (or ``label -> (scorer,
    metric)`` for a column of another metric, e.g. a sub-score's ``image_auroc:visual_max``).

    Every column's mean row covers the categories of ``own``'s rows, so a compared instance that misses one is n/a.
    """
    own_rows = metrics[(metrics["scorer"] == own) & (metrics["metric"] == metric)]
    keys = sorted(instance_cells(metrics, own, metric).index, key=lambda key: (key[0], key[1], key[2] == MEAN_ROW, key[2]))
    index = pd.MultiIndex.from_tuples(keys, names=ROW_KEYS) if keys else pd.MultiIndex.from_arrays([[], [], []], names=ROW_KEYS)
    claimed = own_rows[ROW_KEYS]
    pairs = {label: value if isinstance(value, tuple) else (value, metric) for label, value in columns.items()}
    table = pd.DataFrame({label: instance_cells(metrics, *pair, claimed).reindex(index) for label, pair in pairs.items()}, index=index)
    return table.fillna(MISSING).reset_index()


def sensitivity_columns(parameter: str, own: str, own_value: float, sweep: dict[str, float]) -> dict[str, str]:
    """``label -> scorer`` of a sensitivity table, by increasing value; the instance name joins a label shared by two."""
    entries = sorted({own: own_value, **sweep}.items(), key=lambda item: (item[1], item[0]))
    label = SENSITIVITY[parameter][1]
    values = [value for _, value in entries]
    return {label(value) if values.count(value) == 1 else f"{label(value)} ({name})": name for name, value in entries}


def write_report(ctx: ReportContext) -> list[Path]:
    """Write the tables of :data:`fsad.scorers.devprompt.method.TABLES` under ``ctx.tables_dir``.

    The score files name the instance; its parameters ``compare_with``, ``sensitivity``, ``sensitivity_metric`` and
    the swept values name the columns.
    """
    if not ctx.score_files:
        raise ValueError("the devprompt report needs the instance's score files")
    own = read_score_keys(ctx.score_files[0])["scorer"]
    metrics = read_metrics(ctx.metrics_csv)
    metrics = metrics[metrics["dataset"].isin(metrics.loc[metrics["scorer"] == own, "dataset"].unique())]
    params = ctx.params
    written = []
    comparison = {name: name for name in [*params["compare_with"], own]}
    for metric in ("pixel_auroc", "image_auroc"):
        columns = comparison | ({f"{own}: {sub}": (own, f"image_auroc:{sub}") for sub in params["sub_scores"]} if metric == "image_auroc" else {})
        table = comparison_table(metrics, columns, own, metric)
        caption = f"{METRIC_LABELS[metric].capitalize()} (%) per category: {own} beside {', '.join(params['compare_with']) or 'no other instance'}"
        if metric == "image_auroc" and params["sub_scores"]:
            caption += f", and {own}'s sub-scores {', '.join(params['sub_scores'])} as image scores"
        written += write_table(table, ctx.table_files(metric), caption, _weights_rows(metrics, comparison.values(), metric), _empty_note(table, metric))
    metric = params["sensitivity_metric"]
    for parameter, (name, _, caption) in SENSITIVITY.items():
        columns = sensitivity_columns(parameter, own, params[parameter], params["sensitivity"].get(parameter, {}))
        table = comparison_table(metrics, columns, own, metric)
        notes = ["Columns: " + "; ".join(f"{label}: {scorer}" for label, scorer in columns.items()) + ".", *_empty_note(table, metric)]
        weights = _weights_rows(metrics, columns.values(), metric)
        written += write_table(table, ctx.table_files(name), f"{caption} ({METRIC_LABELS[metric]}, %)", weights, notes)
    return written


def _weights_rows(metrics: pd.DataFrame, scorers, metric: str) -> pd.DataFrame:
    """The metrics rows a table is built from (all of the instances' rows when the metric has none)."""
    rows = metrics[metrics["scorer"].isin(list(scorers))]
    with_metric = rows[rows["metric"] == metric]
    return with_metric if not with_metric.empty else rows


def _empty_note(table: pd.DataFrame, metric: str) -> list[str]:
    return [] if not table.empty else [f"No {METRIC_LABELS[metric]}: the instance's datasets have no pixel masks or no results of this metric."]
