"""The pipeline's own tables from ``metrics.csv``, built with :mod:`fsad.evaluation.tables`.

- :func:`dataset_table`: one dataset, rows = its categories and a ``mean`` row, columns = scorer x setting x metric;
- :func:`summary_table`: rows = dataset x scorer x setting, columns = mean image AUROC, pixel AUROC and PRO;
- :func:`labelled_instances_table`: instances of a study side by side, rows = setting x label, columns = dataset x metric;
- :func:`instance_table`: one scorer instance, rows = dataset x setting x category with a ``mean`` row per dataset and
  setting, columns = its metrics (the report of methods without tables of their own paper's: PatchCore, AnomalyDINO).

Values are in percent with one decimal, ``mean ± std`` over runs. A dataset's value in a run is the mean over all its
categories, so the ``mean`` row's std is the spread of that mean across runs; a category without a value makes it
``n/a`` (see :mod:`fsad.evaluation.tables`).
"""

from __future__ import annotations

import re

import pandas as pd

from fsad.evaluation.tables import (
    MEAN_ROW,
    MISSING,
    TableFiles,
    category_means,
    mean_std_cells,
    over_runs,
    percent,
    stats_cells,
    weights_provenance,
    write_table,
)

MAIN_METRICS = {
    "image_auroc": "I-AUROC",
    "image_ap": "I-AP",
    "image_f1max": "I-F1max",
    "pixel_auroc": "P-AUROC",
    "pixel_pro": "PRO",
}
SUMMARY_METRICS = {"image_auroc": "I-AUROC", "pixel_auroc": "P-AUROC", "pixel_pro": "PRO"}


def _select(metrics: pd.DataFrame, names: dict[str, str]) -> pd.DataFrame:
    return percent(metrics[metrics["metric"].isin(names)])


def dataset_table(metrics: pd.DataFrame, dataset: str, metric_names: dict[str, str] = MAIN_METRICS) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-category table of one dataset.

    Args:
        metrics: ``metrics.csv`` rows (values in [0, 1]).
        dataset: the dataset to tabulate.
        metric_names: metric -> column label, in column order; metrics absent from ``metrics`` are left out.

    Returns:
        ``(table, stats)``: ``table`` has index ``category`` (categories sorted, then ``mean``), column MultiIndex
        ``(scorer, setting, metric label)`` and text cells; ``stats`` holds the numbers
        (``category, scorer, setting, metric, mean, std, n_runs, na``, percent).
    """
    of_dataset = metrics[metrics["dataset"] == dataset]
    rows = _select(of_dataset, metric_names)
    if rows.empty:
        raise ValueError(f"metrics hold no rows of dataset {dataset!r} with metrics {list(metric_names)}; run its evaluation first")
    keys = ["scorer", "setting", "metric"]
    per_category = over_runs(rows, ["category", *keys])
    # The mean row claims every category of the dataset's table.
    dataset_mean = over_runs(category_means(rows, keys, of_dataset[["category"]]), keys).assign(category=MEAN_ROW)
    stats = pd.concat([per_category, dataset_mean], ignore_index=True)
    stats["text"] = stats_cells(stats)
    stats["label"] = stats["metric"].map(metric_names)
    table = stats.pivot(index="category", columns=["scorer", "setting", "label"], values="text")
    categories = sorted(c for c in table.index if c != MEAN_ROW) + [MEAN_ROW]
    labels = list(metric_names.values())
    columns = sorted(table.columns, key=lambda c: (c[0], c[1], labels.index(c[2])))
    return table.loc[categories, columns].fillna(MISSING), stats.drop(columns=["text", "label"])


def summary_table(metrics: pd.DataFrame, metric_names: dict[str, str] = SUMMARY_METRICS) -> pd.DataFrame:
    """Rows ``(dataset, scorer, setting)``, one text column per metric label plus ``weights``.

    Each value is the mean over all of the dataset's categories, mean ± std over runs; ``–`` where a metric is
    absent (no maps or no masks).
    """
    rows = _select(metrics, metric_names)
    if rows.empty:
        raise ValueError(f"metrics hold no rows with metrics {list(metric_names)}; run the evaluation first")
    keys = ["dataset", "scorer", "setting", "metric"]
    stats = over_runs(category_means(rows, keys, metrics[["dataset", "category"]]), keys)
    stats["text"] = stats_cells(stats)
    table = stats.pivot(index=["dataset", "scorer", "setting"], columns="metric", values="text")
    table = table.reindex(columns=[m for m in metric_names if m in table.columns]).rename(columns=metric_names).fillna(MISSING)
    table.columns.name = None
    provenance = metrics.groupby(["dataset", "scorer", "setting"])["weights"].agg(lambda w: "; ".join(sorted(w.astype(str).unique())))
    table["weights"] = provenance.reindex(table.index)
    return table.sort_index()


def labelled_instances_table(metrics: pd.DataFrame, rows: list[dict[str, str]], metric_names: dict[str, str], row: str = "variant") -> pd.DataFrame:
    """Instances side by side, one row per ``{label, scorer}`` of ``rows`` (a study whose instances differ in one thing).

    Returns:
        text cells with index ``(setting, row)`` (settings in natural order, then ``rows``' order) and columns
        ``(dataset, metric label)``: per run the mean over all of the dataset's categories, mean ± std over runs;
        ``–`` where an instance lacks a dataset or setting the others have.
    """
    labels = {entry["scorer"]: entry["label"] for entry in rows}
    chosen = _select(metrics[metrics["scorer"].isin(labels)], metric_names)
    if chosen.empty:
        raise ValueError(f"metrics hold no rows of scorers {sorted(labels)} with metrics {list(metric_names)}; run their evaluation first")
    keys = ["scorer", "setting", "dataset", "metric"]
    stats = over_runs(category_means(chosen, keys, metrics[["dataset", "category"]]), keys)
    stats["text"] = stats_cells(stats)
    stats[row] = stats["scorer"].map(labels)
    stats["label"] = stats["metric"].map(metric_names)
    table = stats.pivot(index=["setting", row], columns=["dataset", "label"], values="text")
    order = [entry["label"] for entry in rows]
    metric_order = list(metric_names.values())
    table = table.reindex(
        index=sorted(table.index, key=lambda i: (natural_key(i[0]), order.index(i[1]))),
        columns=sorted(table.columns, key=lambda c: (c[0], metric_order.index(c[1]))),
    )
    table.columns.names = [None, None]
    return table.fillna(MISSING)


def natural_key(name: str) -> tuple:
    """``k2 < k4 < k8 < k16``: digit runs compare as numbers."""
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name))


def instance_table(metrics: pd.DataFrame, scorer: str, metric_names: dict[str, str] = MAIN_METRICS) -> pd.DataFrame:
    """Per-category results of one scorer instance.

    Returns:
        text cells with index ``(dataset, setting, category)`` (each dataset and setting's categories sorted, then its
        ``mean`` row: per run the mean over those categories) and one column per metric label present, mean ± std
        over runs; ``–`` where the instance has no value of a metric (no maps, or a dataset without masks).
    """
    rows = _select(metrics[metrics["scorer"] == scorer], metric_names)
    if rows.empty:
        raise ValueError(f"metrics hold no rows of scorer {scorer!r} with metrics {list(metric_names)}; run its evaluation first")
    keys = ["dataset", "setting"]
    cells = mean_std_cells(rows, [*keys, "metric"], rows[[*keys, "category"]].drop_duplicates()).rename("text").reset_index()
    table = cells.pivot(index=[*keys, "category"], columns="metric", values="text")
    order = sorted(table.index, key=lambda key: (key[0], key[1], key[2] == MEAN_ROW, key[2]))
    table = table.reindex(index=order, columns=[m for m in metric_names if m in table.columns]).rename(columns=metric_names).fillna(MISSING)
    table.columns.name = None
    return table


def write_dataset_tables(metrics: pd.DataFrame, dataset: str, files: TableFiles) -> pd.DataFrame:
    """:func:`dataset_table` of ``dataset`` written to ``files``; returns the table."""
    rows = metrics[metrics["dataset"] == dataset]
    table, _ = dataset_table(metrics, dataset)
    per_category = rows.groupby("category")["weights"].agg(lambda w: "; ".join(sorted(w.astype(str).unique())))
    per_category[MEAN_ROW] = "; ".join(weights_provenance(rows))
    write_table(table, files, f"{dataset}: per-category results (%)", rows, row_weights=per_category)
    return table


def write_summary_tables(metrics: pd.DataFrame, files: TableFiles) -> pd.DataFrame:
    """:func:`summary_table` written to ``files``; returns the table."""
    table = summary_table(metrics)
    write_table(table, files, "Summary: mean over categories (%)", metrics)
    return table

