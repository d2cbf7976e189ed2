"""The one table layer of every report: aggregation over categories and runs, the cell format, and the table files.

Every table of the pipeline (the per-dataset and summary tables, and each method's own report) is built from these
pieces and nothing else aggregates:

- :func:`category_means`: per run, the mean over the categories a row of the table covers;
- :func:`over_runs`: the mean and the population standard deviation (numpy's default) over runs; the std only with
  two runs or more, since one run has no spread;
- :func:`format_cell` / :func:`format_pair`: ``"93.1 ± 0.4"``, ``"93.1"``, ``"(91.9, 95.7)"``, in percent with the
  table's digits;
- :func:`write_table`: Markdown, CSV, LaTeX (booktabs) and HTML, each written atomically, with the weights and
  software provenance above the table and its notes under it.

Missing values follow one rule everywhere. A mean over fewer categories (or datasets) than the table claims is never
reported: it is ``n/a`` with a footnote saying why, :data:`NA_UNDEFINED` when a category's metric is undefined (a
one-class test set, masks without a defect pixel) and :data:`NA_MISSING` when a category or run has no result at all.
``–`` marks a cell of a scorer, setting or metric that has no results at all (not run, or no maps or masks).
:func:`write_table` adds the footnote of each ``n/a`` kind that a table shows.

The weights label: when any result comes from random (fallback) weights, the Markdown and LaTeX outputs carry
:data:`RANDOM_WEIGHTS_NOTE` above the table and the CSV has a ``weights`` column (:func:`uses_random_weights`
decides from the ``weights`` column that metrics rows and score files both have).
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from fsad.io import write_text

RANDOM_WEIGHTS_NOTE = "Weights: random (fallback) — these numbers are NOT comparable to the papers"
MEAN_ROW = "mean"
MISSING = "–"
NA_UNDEFINED = "n/a¹"
NA_MISSING = "n/a²"
# One reason per n/a kind; a value's reason is "" when it is defined.
UNDEFINED, INCOMPLETE = "undefined", "incomplete"
NA_TEXT = {UNDEFINED: NA_UNDEFINED, INCOMPLETE: NA_MISSING}
NA_NOTES = {
    NA_UNDEFINED: "¹ n/a: the metric is undefined for a category it covers (its test set or masks hold one class only), "
    "so there is no mean over all of them.",
    NA_MISSING: "² n/a: a category or run it covers has no result; a mean over fewer categories than the table lists "
    "is not reported.",
}


def percent(rows: pd.DataFrame, value: str = "value") -> pd.DataFrame:
    """``rows`` with ``value`` as float percent (metrics are stored in [0, 1])."""
    return rows.assign(**{value: rows[value].astype(float) * 100})


def _worst_reason(reasons: pd.Series) -> str:
    """Of the rows' reasons, the one a mean over them reports: a missing category before an undefined value."""
    return INCOMPLETE if (reasons == INCOMPLETE).any() else (UNDEFINED if (reasons == UNDEFINED).any() else "")


def category_means(
    rows: pd.DataFrame,
    keys: Sequence[str],
    categories: pd.DataFrame | None = None,
    value: str = "value",
    over: str = "category",
) -> pd.DataFrame:
    """Per ``keys`` and run, the mean of ``value`` over ``over`` (categories), with the reason when it is undefined.

    Args:
        rows: one row per (``keys``, ``run``, ``over``).
        keys: the columns of a table cell, e.g. ``["dataset", "scorer", "setting", "metric"]``.
        categories: the (``over``) values the table claims for each cell: a frame holding ``over`` and any of
            ``keys`` (e.g. ``dataset, category``); a cell and run that lacks one of them has no mean. ``None``
            claims only the categories present.

    Returns:
        ``keys, run, value, na``: ``value`` is NaN when any category's value is NaN (``na`` = ``"undefined"``) or
        one is missing (``"incomplete"``); ``na`` is ``""`` otherwise.
    """
    keys = list(keys)
    rows = rows[[*keys, "run", over, value]].assign(_present=True)
    if categories is not None:
        shared = [c for c in keys if c in categories.columns]
        claimed = categories[[*shared, over]].drop_duplicates()
        cells = rows[[*keys, "run"]].drop_duplicates()
        grid = cells.merge(claimed, on=shared) if shared else cells.merge(claimed, how="cross")
        rows = grid.merge(rows, on=[*keys, "run", over], how="left")
        rows["_present"] = rows["_present"].eq(True)
    rows["na"] = np.where(~rows["_present"], INCOMPLETE, np.where(rows[value].isna(), UNDEFINED, ""))
    grouped = rows.groupby([*keys, "run"], sort=False, dropna=False)
    means = grouped[value].agg(lambda v: v.mean(skipna=False)).rename(value)
    return pd.concat([means, grouped["na"].agg(_worst_reason)], axis=1).reset_index()


def over_runs(per_run: pd.DataFrame, keys: Sequence[str], value: str = "value") -> pd.DataFrame:
    """``keys, mean, std, n_runs, na`` over runs: NaN runs make the mean NaN; the std is NaN with fewer than two runs.

    ``per_run`` has one row per (``keys``, ``run``); its ``na`` column (from :func:`category_means`) gives the reason
    of a NaN mean; without it a NaN value counts as undefined.
    """
    keys = list(keys)
    if "na" not in per_run.columns:
        per_run = per_run.assign(na=np.where(per_run[value].isna(), UNDEFINED, ""))
    grouped = per_run.groupby(keys, sort=False, dropna=False)
    stats = grouped[value].agg(
        mean=lambda v: v.mean(skipna=False),
        std=lambda v: v.std(ddof=0, skipna=False) if len(v) > 1 else np.nan,
        n_runs="size",
    )
    return stats.join(grouped["na"].agg(_worst_reason)).reset_index()


def format_cell(mean: float, std: float = np.nan, digits: int = 1, na: str = UNDEFINED) -> str:
    """``"93.1 ± 0.4"``; ``"93.1"`` without a std; an ``n/a`` marker (:data:`NA_TEXT` of ``na``) for a NaN mean."""
    if mean is None or np.isnan(mean):
        return NA_TEXT.get(na or UNDEFINED, NA_UNDEFINED)
    return f"{mean:.{digits}f}" if std is None or np.isnan(std) else f"{mean:.{digits}f} ± {std:.{digits}f}"


def format_pair(values: Iterable[float], digits: int = 1, na: str = UNDEFINED) -> str:
    """``"(91.9, 95.7)"``, an ``n/a`` marker in place of a NaN value."""
    return "(" + ", ".join(format_cell(v, digits=digits, na=na) for v in values) + ")"


def stats_cells(stats: pd.DataFrame, digits: int = 1) -> list[str]:
    """:func:`format_cell` of each row of an :func:`over_runs` frame."""
    return [format_cell(m, s, digits, na) for m, s, na in zip(stats["mean"], stats["std"], stats["na"])]


def mean_std_cells(rows: pd.DataFrame, keys: Sequence[str], categories: pd.DataFrame | None = None, digits: int = 1, with_mean_row: bool = True) -> pd.Series:
    """Cells of each (``keys``, category) over runs and, per ``keys``, a :data:`MEAN_ROW` cell of the category means.

    The common shape of per-category tables: ``rows`` hold percent ``value`` per ``keys``, ``category`` and ``run``.
    Returns text indexed by ``(*keys, category)``.
    """
    keys = list(keys)
    stats = [over_runs(rows, [*keys, "category"])]
    if with_mean_row:
        stats.append(over_runs(category_means(rows, keys, categories), keys).assign(category=MEAN_ROW))
    stats = pd.concat(stats, ignore_index=True)
    return pd.Series(stats_cells(stats, digits), index=pd.MultiIndex.from_frame(stats[[*keys, "category"]]), dtype=object)


def na_notes(table: pd.DataFrame) -> list[str]:
    """The footnote of each ``n/a`` kind that ``table``'s cells show."""
    cells = set(table.astype(str).to_numpy().ravel())
    return [note for marker, note in NA_NOTES.items() if any(marker in cell for cell in cells)]


# -- weights and software provenance ---------------------------------------------------------------------------------


def weights_provenance(rows: pd.DataFrame) -> list[str]:
    """Distinct weights provenance strings of the given rows, sorted."""
    return sorted(rows["weights"].astype(str).unique())


def uses_random_weights(rows: pd.DataFrame) -> bool:
    """Whether any row (metrics rows, score rows: anything with a ``weights`` column) comes from random (fallback) weights."""
    return bool(rows["weights"].astype(str).str.contains("random").any())


def with_weights_note(title: str, rows: pd.DataFrame) -> str:
    """A figure title, with :data:`RANDOM_WEIGHTS_NOTE` on a second line when any of ``rows`` used random weights."""
    return f"{title}\n{RANDOM_WEIGHTS_NOTE}" if uses_random_weights(rows) else title


def environment_provenance(rows: pd.DataFrame) -> list[str]:
    """Distinct software environments (``environment`` column of metrics rows) of the given rows, sorted; none without the column."""
    if "environment" not in rows.columns:
        return []
    return sorted(rows["environment"].dropna().astype(str).unique())


def _provenance_lines(rows: pd.DataFrame) -> list[str]:
    lines = [RANDOM_WEIGHTS_NOTE] if uses_random_weights(rows) else []
    lines += ["Weights provenance: " + "; ".join(weights_provenance(rows))]
    environments = environment_provenance(rows)
    return lines + (["Software: " + " | ".join(environments)] if environments else [])


def markdown_weights_lines(rows: pd.DataFrame) -> list[str]:
    """Lines to put above a Markdown table of ``rows``: the random-weights note in bold (when any), the provenance."""
    return [f"**{line}**" if line == RANDOM_WEIGHTS_NOTE else line for line in _provenance_lines(rows)]


def latex_escape(text: str) -> str:
    """``text`` with LaTeX's special characters escaped (dashes as ``--``/``---``, footnote marks as superscripts)."""
    replacements = {
        "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}",
        "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "—": "---", "–": "--", "¹": r"\textsuperscript{1}",
        "²": r"\textsuperscript{2}",
    }
    return "".join(replacements.get(char, char) for char in str(text))


def latex_weights_lines(rows: pd.DataFrame) -> list[str]:
    """Lines to put above a LaTeX table of ``rows``: the random-weights note as bold text (when any), the provenance as a comment."""
    return [
        f"\\noindent\\textbf{{{latex_escape(line)}}}\\\\" if line == RANDOM_WEIGHTS_NOTE else f"% {line}"
        for line in _provenance_lines(rows)
    ]


# -- table files -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TableFiles:
    """Where one table goes: Markdown, CSV and LaTeX side by side, and the HTML page the Snakemake report shows."""

    md: Path
    csv: Path
    tex: Path
    html: Path | None = None

    def __post_init__(self) -> None:
        for name in ("md", "csv", "tex", "html"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, Path(getattr(self, name)))

    @classmethod
    def named(cls, tables_dir: str | Path, name: str, html_dir: str | Path | None = None) -> TableFiles:
        """``{tables_dir}/{name}.{md,csv,tex}`` and ``{html_dir}/{name}.html``."""
        stem = Path(tables_dir) / name
        return cls(stem.with_suffix(".md"), stem.with_suffix(".csv"), stem.with_suffix(".tex"), None if html_dir is None else Path(html_dir) / f"{name}.html")

    def paths(self) -> list[Path]:
        return [p for p in (self.md, self.csv, self.tex, self.html) if p is not None]


def _flat_labels(labels: Iterable) -> list[str]:
    return [" / ".join(map(str, label)) if isinstance(label, tuple) else str(label) for label in labels]


def _has_index(table: pd.DataFrame) -> bool:
    return not isinstance(table.index, pd.RangeIndex)


def to_markdown(table: pd.DataFrame, rows: pd.DataFrame, caption: str, notes: Sequence[str] = ()) -> str:
    """Markdown: the caption as a heading, the provenance lines (the random-weights note in bold), the pipe table, the notes."""
    flat = table.copy()
    flat.columns = _flat_labels(table.columns)
    if _has_index(table):
        flat.index = _flat_labels(flat.index)
        flat.index.name = " / ".join(str(n) for n in table.index.names if n is not None) or None
    flat = flat.map(lambda cell: str(cell).replace("|", "\\|"))
    # Cells are text already: tabulate's number parsing would print a column of "93.0" cells as "93".
    body = flat.to_markdown(index=_has_index(table), disable_numparse=True)
    return "\n".join([f"## {caption}", "", *markdown_weights_lines(rows), "", body, *(["", *notes] if notes else []), ""])


def _csv_frame(table: pd.DataFrame, rows: pd.DataFrame, row_weights: pd.Series | None) -> pd.DataFrame:
    flat = table.copy()
    flat.columns = _flat_labels(table.columns)
    if "weights" not in flat.columns:
        flat["weights"] = row_weights.reindex(flat.index) if row_weights is not None else "; ".join(weights_provenance(rows))
    return flat.reset_index() if _has_index(table) else flat


def _column_format(table: pd.DataFrame) -> str:
    """Labels left, values right: the index levels (or, without an index, the first column) are labels."""
    if _has_index(table):
        return "l" * table.index.nlevels + "r" * table.shape[1]
    return "l" + "r" * max(table.shape[1] - 1, 0)


def to_latex(table: pd.DataFrame, rows: pd.DataFrame, caption: str, notes: Sequence[str] = ()) -> str:
    """booktabs LaTeX (pandas Styler): escaped labels, ``$\\pm$``, a rule above each ``mean`` row, provenance above, notes below."""
    cells = table.map(lambda cell: latex_escape(cell).replace("±", r"$\pm$"))
    styler = cells.style.format_index(escape="latex", axis=0).format_index(escape="latex", axis=1).hide(axis="columns", names=True)
    if not _has_index(table):
        styler = styler.hide(axis="index")
    body = styler.to_latex(
        hrules=True,
        multicol_align="c",
        multirow_align="naive",
        column_format=_column_format(table),
        caption=latex_escape(caption),
        position_float="centering",
        environment="table",
    )
    body = body.replace(f"\n{MEAN_ROW} &", f"\n\\midrule\n{MEAN_ROW} &")
    if notes:
        body = body.replace("\\end{table}", "\\par\\smallskip\\footnotesize " + " ".join(map(latex_escape, notes)) + "\n\\end{table}")
    return "\n".join([*latex_weights_lines(rows), body])


_HTML_STYLE = """
body { font-family: sans-serif; font-size: 13px; margin: 1em; color: #111; background: #fff; }
h1 { font-size: 16px; }
table { border-collapse: collapse; }
th, td { border: 1px solid #bbb; padding: 3px 7px; text-align: right; white-space: nowrap; }
th { background: #eee; }
td:first-child, th:first-child { text-align: left; }
tbody tr:nth-child(even) { background: #f7f7f7; }
"""


def to_html(csv_frame: pd.DataFrame, caption: str, notes: Sequence[str] = (), source: str = "") -> str:
    """A self-contained HTML page of the CSV's cells (text as written, escaped): Snakemake's report shows HTML inline."""
    body = csv_frame.astype(str).to_html(index=False, border=0, escape=True)
    notes_html = "".join(f"<p>{html.escape(note)}</p>" for note in notes)
    return (
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">"
        f"<title>{html.escape(caption)}</title><style>{_HTML_STYLE}</style></head>\n"
        f"<body><h1>{html.escape(caption)}</h1>\n{body}\n{notes_html}"
        f"<p>Source: {html.escape(source)}</p></body></html>\n"
    )


def write_table(
    table: pd.DataFrame,
    files: TableFiles,
    caption: str,
    rows: pd.DataFrame,
    notes: Sequence[str] = (),
    row_weights: pd.Series | None = None,
) -> list[Path]:
    """Write ``table`` to each of ``files`` atomically; returns the paths.

    Args:
        table: text cells; a non-default index is written as the leading column(s).
        rows: the rows the table was built from (a ``weights`` column, optionally ``environment``): their provenance,
            and the random-weights note when any used random weights, go above the table.
        notes: sentences under the table; the footnote of each ``n/a`` kind the cells show is added to them.
        row_weights: per-row weights provenance for the CSV's ``weights`` column (else the table's, on every row).
    """
    notes = [*notes, *(n for n in na_notes(table) if n not in notes)]
    csv_frame = _csv_frame(table, rows, row_weights)
    write_text(files.md, to_markdown(table, rows, caption, notes))
    write_text(files.csv, csv_frame.to_csv(index=False))
    write_text(files.tex, to_latex(table, rows, caption, notes))
    if files.html is not None:
        write_text(files.html, to_html(csv_frame, caption, notes, source=files.csv.name))
    return files.paths()
