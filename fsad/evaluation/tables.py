"""Paper-style result tables from ``metrics.csv``, written as Markdown, CSV and LaTeX (booktabs).

- :func:`dataset_table`: one dataset, rows = its categories and a ``mean`` row, columns = scorer x setting x metric;
- :func:`summary_table`: rows = dataset x scorer x setting, columns = mean image AUROC, pixel AUROC and PRO.

Values are in percent with one decimal, ``mean ± std`` over runs (population std, as numpy's default; only the mean
when there is a single run). A dataset's value in a run is the mean over its categories, so the ``mean`` row's std
is the spread of that mean across runs. A NaN in any category (one-class test set) makes the mean ``n/a`` rather
than quietly averaging fewer categories.

Every table states the backbone weights provenance; when any result comes from random (fallback) weights, the
Markdown and LaTeX outputs carry :data:`RANDOM_WEIGHTS_NOTE` above the table and the CSV has a ``weights`` column.
The same helpers label every other table and figure of the report (:mod:`fsad.evaluation.anomalous_tables`,
:mod:`fsad.evaluation.plots`, :mod:`fsad.evaluation.gallery`): :func:`uses_random_weights` decides from the
``weights`` column (metrics rows and score files both have one), :func:`markdown_weights_lines`,
:func:`latex_weights_lines` and :func:`with_weights_note` write the label.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from fsad.io import write_text

MAIN_METRICS = {
    "image_auroc": "I-AUROC",
    "image_ap": "I-AP",
    "image_f1max": "I-F1max",
    "pixel_auroc": "P-AUROC",
    "pixel_pro": "PRO",
}
SUMMARY_METRICS = {"image_auroc": "I-AUROC", "pixel_auroc": "P-AUROC", "pixel_pro": "PRO"}
RANDOM_WEIGHTS_NOTE = "Weights: random (fallback) — these numbers are NOT comparable to the papers"
MEAN_ROW = "mean"


def format_mean_std(mean: float, std: float, n_runs: int, plus_minus: str = "±") -> str:
    """``"93.1 ± 0.4"`` (values already in percent), ``"93.1"`` for a single run, ``"n/a"`` for NaN."""
    if np.isnan(mean):
        return "n/a"
    return f"{mean:.1f}" if n_runs < 2 else f"{mean:.1f} {plus_minus} {std:.1f}"


def _over_runs(per_run: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """``mean, std, n_runs`` of the percent ``value`` over runs for each ``keys`` group; NaN runs make the mean NaN."""
    return (
        per_run.groupby(keys, sort=False)["value"]
        .agg(
            mean=lambda v: v.mean(skipna=False),
            std=lambda v: v.std(ddof=0, skipna=False),
            n_runs="size",
        )
        .reset_index()
    )


def _category_means(rows: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Per run, the mean over categories (NaN if any category is NaN)."""
    return rows.groupby([*keys, "run"], sort=False)["value"].agg(lambda v: v.mean(skipna=False)).reset_index()


def weights_provenance(metrics: pd.DataFrame) -> list[str]:
    """Distinct weights provenance strings of the given rows, sorted."""
    return sorted(metrics["weights"].astype(str).unique())


def uses_random_weights(rows: pd.DataFrame) -> bool:
    """Whether any row (metrics rows, score rows: anything with a ``weights`` column) comes from random (fallback) weights."""
    return bool(rows["weights"].astype(str).str.contains("random").any())


def with_weights_note(title: str, rows: pd.DataFrame) -> str:
    """A figure title, with :data:`RANDOM_WEIGHTS_NOTE` on a second line when any of ``rows`` used random weights."""
    return f"{title}\n{RANDOM_WEIGHTS_NOTE}" if uses_random_weights(rows) else title


def _select(metrics: pd.DataFrame, names: dict[str, str]) -> pd.DataFrame:
    rows = metrics[metrics["metric"].isin(names)].copy()
    rows["value"] = rows["value"].astype(float) * 100
    return rows


def dataset_table(metrics: pd.DataFrame, dataset: str, metric_names: dict[str, str] = MAIN_METRICS) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-category table of one dataset.

    Args:
        metrics: ``metrics.csv`` rows (values in [0, 1]).
        dataset: the dataset to tabulate.
        metric_names: metric -> column label, in column order; metrics absent from ``metrics`` are left out.

    Returns:
        ``(table, stats)``: ``table`` has index ``category`` (categories sorted, then ``mean``), column MultiIndex
        ``(scorer, setting, metric label)`` and ``"mean ± std"`` text cells; ``stats`` holds the numbers
        (``category, scorer, setting, metric, mean, std, n_runs``, percent).
    """
    rows = _select(metrics[metrics["dataset"] == dataset], metric_names)
    if rows.empty:
        raise ValueError(f"metrics hold no rows of dataset {dataset!r} with metrics {list(metric_names)}; run its evaluation first")
    keys = ["scorer", "setting", "metric"]
    per_category = _over_runs(rows, ["category", *keys])
    dataset_mean = _over_runs(_category_means(rows, keys), keys).assign(category=MEAN_ROW)
    stats = pd.concat([per_category, dataset_mean], ignore_index=True)
    stats["text"] = [format_mean_std(m, s, n) for m, s, n in zip(stats["mean"], stats["std"], stats["n_runs"])]
    stats["label"] = stats["metric"].map(metric_names)
    table = stats.pivot(index="category", columns=["scorer", "setting", "label"], values="text")
    categories = sorted(c for c in table.index if c != MEAN_ROW) + [MEAN_ROW]
    labels = list(metric_names.values())
    columns = sorted(table.columns, key=lambda c: (c[0], c[1], labels.index(c[2])))
    return table.loc[categories, columns].fillna("–"), stats.drop(columns=["text", "label"])


def summary_table(metrics: pd.DataFrame, metric_names: dict[str, str] = SUMMARY_METRICS) -> pd.DataFrame:
    """Rows ``(dataset, scorer, setting)``, one ``"mean ± std"`` column per metric label plus ``weights``.

    Each value is the mean over the dataset's categories, mean ± std over runs; ``–`` where a metric is absent
    (no maps or no masks).
    """
    rows = _select(metrics, metric_names)
    if rows.empty:
        raise ValueError(f"metrics hold no rows with metrics {list(metric_names)}; run the evaluation first")
    keys = ["dataset", "scorer", "setting", "metric"]
    stats = _over_runs(_category_means(rows, keys), keys)
    stats["text"] = [format_mean_std(m, s, n) for m, s, n in zip(stats["mean"], stats["std"], stats["n_runs"])]
    table = stats.pivot(index=["dataset", "scorer", "setting"], columns="metric", values="text")
    table = table.reindex(columns=[m for m in metric_names if m in table.columns]).rename(columns=metric_names).fillna("–")
    table.columns.name = None
    provenance = metrics.groupby(["dataset", "scorer", "setting"])["weights"].agg(lambda w: "; ".join(sorted(w.astype(str).unique())))
    table["weights"] = provenance.reindex(table.index)
    return table.sort_index()


def latex_escape(text: str) -> str:
    """``text`` with LaTeX's special characters escaped (dashes as ``--``/``---``)."""
    replacements = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "—": "---", "–": "--"}
    return "".join(replacements.get(char, char) for char in str(text))


def environment_provenance(rows: pd.DataFrame) -> list[str]:
    """Distinct software environments (``environment`` column of metrics rows) of the given rows, sorted; none without the column."""
    if "environment" not in rows.columns:
        return []
    return sorted(rows["environment"].dropna().astype(str).unique())


def _weights_lines(rows: pd.DataFrame) -> list[str]:
    lines = [RANDOM_WEIGHTS_NOTE] if uses_random_weights(rows) else []
    lines += ["Weights provenance: " + "; ".join(weights_provenance(rows))]
    environments = environment_provenance(rows)
    return lines + (["Software: " + " | ".join(environments)] if environments else [])


def markdown_weights_lines(rows: pd.DataFrame) -> list[str]:
    """Lines to put above a Markdown table of ``rows``: the random-weights note in bold (when any), the provenance."""
    return [f"**{line}**" if line == RANDOM_WEIGHTS_NOTE else line for line in _weights_lines(rows)]


def latex_weights_lines(rows: pd.DataFrame) -> list[str]:
    """Lines to put above a LaTeX table of ``rows``: the random-weights note as bold text (when any), the provenance as a comment."""
    return [
        f"\\noindent\\textbf{{{latex_escape(line)}}}\\\\" if line == RANDOM_WEIGHTS_NOTE else f"% {line}"
        for line in _weights_lines(rows)
    ]


def _flat_columns(table: pd.DataFrame) -> list[str]:
    return [" / ".join(map(str, c)) if isinstance(c, tuple) else str(c) for c in table.columns]


def to_markdown(table: pd.DataFrame, metrics: pd.DataFrame, title: str) -> str:
    """Markdown: a title, the weights lines (the random-weights note in bold), then a pipe table."""
    flat = table.copy()
    flat.columns = _flat_columns(table)
    flat.index = [" / ".join(map(str, i)) if isinstance(i, tuple) else str(i) for i in flat.index]
    flat.index.name = " / ".join(str(n) for n in table.index.names if n is not None) or None
    flat = flat.map(lambda cell: str(cell).replace("|", "\\|"))
    lines = [f"## {title}", "", *markdown_weights_lines(metrics)]
    # Cells are text already: tabulate's number parsing would print a column of "93.0" cells as "93".
    return "\n".join([*lines, "", flat.to_markdown(disable_numparse=True), ""])


def to_csv_text(table: pd.DataFrame, metrics: pd.DataFrame, row_weights: pd.Series | None = None) -> str:
    """CSV with flat ``a / b / c`` headers and a ``weights`` column (per row when given, else the table's)."""
    flat = table.copy()
    flat.columns = _flat_columns(table)
    if "weights" not in flat.columns:
        flat["weights"] = row_weights.reindex(flat.index) if row_weights is not None else "; ".join(weights_provenance(metrics))
    return flat.to_csv()


def to_latex(table: pd.DataFrame, metrics: pd.DataFrame, caption: str) -> str:
    """booktabs LaTeX (pandas Styler): escaped labels, ``$\\pm$``, a rule above the ``mean`` row, weights note above."""
    cells = table.map(lambda cell: latex_escape(cell).replace("±", r"$\pm$"))
    styler = cells.style.format_index(escape="latex", axis=0).format_index(escape="latex", axis=1).hide(axis="columns", names=True)
    body = styler.to_latex(
        hrules=True,
        multicol_align="c",
        multirow_align="naive",
        column_format="l" * table.index.nlevels + "r" * table.shape[1],
        caption=latex_escape(caption),
        position_float="centering",
        environment="table",
    )
    body = body.replace(f"\n{MEAN_ROW} &", f"\n\\midrule\n{MEAN_ROW} &")
    return "\n".join([*latex_weights_lines(metrics), body])


def write_table_files(table: pd.DataFrame, metrics: pd.DataFrame, title: str, md: str | Path, csv: str | Path, tex: str | Path, row_weights: pd.Series | None = None) -> None:
    """Write one table as Markdown, CSV and LaTeX, each atomically."""
    write_text(md, to_markdown(table, metrics, title))
    write_text(csv, to_csv_text(table, metrics, row_weights))
    write_text(tex, to_latex(table, metrics, title))


def write_dataset_tables(metrics: pd.DataFrame, dataset: str, md: str | Path, csv: str | Path, tex: str | Path) -> pd.DataFrame:
    """:func:`dataset_table` of ``dataset`` written to ``md``, ``csv`` and ``tex``; returns the table."""
    rows = metrics[metrics["dataset"] == dataset]
    table, _ = dataset_table(metrics, dataset)
    per_category = rows.groupby("category")["weights"].agg(lambda w: "; ".join(sorted(w.astype(str).unique())))
    per_category[MEAN_ROW] = "; ".join(weights_provenance(rows))
    write_table_files(table, rows, f"{dataset}: per-category results (%)", md, csv, tex, per_category)
    return table


def write_summary_tables(metrics: pd.DataFrame, md: str | Path, csv: str | Path, tex: str | Path) -> pd.DataFrame:
    """:func:`summary_table` written to ``md``, ``csv`` and ``tex``; returns the table."""
    table = summary_table(metrics)
    write_table_files(table, metrics, "Summary: mean over categories (%)", md, csv, tex)
    return table
