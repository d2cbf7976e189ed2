"""The report of a method that brings no paper tables of its own (PatchCore, AnomalyDINO): one table per instance,
``tables/{scorer}/per_category``, its image and pixel AUROC, AP, F1-max and PRO per category, with each dataset and
setting's mean over categories (:func:`fsad.evaluation.summary.instance_table`), mean ± std over runs."""

from __future__ import annotations

from pathlib import Path

from fsad.scorers.method import Report, ReportContext

TABLE = "per_category"


def report(caption: Path) -> Report:
    """The declaration of this report, with the method's own caption."""
    return Report(write="fsad.scorers.per_category_report:write_report", caption=caption, tables=(TABLE,))


def write_report(ctx: ReportContext) -> list[Path]:
    """Write the per-category table of the instance the score files name."""
    from fsad.evaluation.collect import read_metrics
    from fsad.evaluation.summary import instance_table
    from fsad.evaluation.tables import write_table
    from fsad.score_files import read_score_keys

    if not ctx.score_files:
        raise ValueError("the per-category report needs the instance's score files")
    scorer = read_score_keys(ctx.score_files[0])["scorer"]
    metrics = read_metrics(ctx.metrics_csv)
    table = instance_table(metrics, scorer)
    caption = f"{scorer}: per-category results (%), mean ± std over runs"
    return write_table(table, ctx.table_files(TABLE), caption, metrics[metrics["scorer"] == scorer])
