"""The fusion's report: each member, the equal-weight sum and the fused score side by side; the chosen weights.

- ``members``: rows ``(dataset, setting)``, columns each member, ``equal weights`` and ``fused ({score_weights})``:
  image AUROC (%), per run the mean over the dataset's categories, mean ± std over runs. The values come from the
  fusion's own metric rows (``image_auroc`` and ``image_auroc:<column>``: the members' normalised scores rank the
  images as their own scores do).
- ``weights``: rows ``(dataset, category, setting, run)``, one column per member: the weights that fill ``score``,
  and their validation AUROC.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from fsad.evaluation.metrics import SUB_SCORE_PREFIX
from fsad.evaluation.tables import category_means, over_runs, percent, stats_cells
from fsad.scorers.method import ReportContext


def members_table(metrics: pd.DataFrame, scorer: str, members: list[str], score_weights: str) -> pd.DataFrame:
    """Text cells: rows ``(dataset, setting)``, columns the members, ``equal weights`` and the fused score."""
    labels = {SUB_SCORE_PREFIX + m: m for m in members} | {SUB_SCORE_PREFIX + "score_equal": "equal weights", "image_auroc": f"fused ({score_weights})"}
    rows = percent(metrics[(metrics["scorer"] == scorer) & metrics["metric"].isin(labels)])
    if rows.empty:
        raise ValueError(f"metrics hold no image AUROC rows of fusion {scorer!r}; run its evaluation first")
    keys = ["dataset", "setting", "metric"]
    stats = over_runs(category_means(rows, keys, rows[["dataset", "category"]].drop_duplicates()), keys)
    stats["text"] = stats_cells(stats)
    table = stats.pivot(index=["dataset", "setting"], columns="metric", values="text")
    table = table.reindex(columns=[m for m in labels if m in table.columns]).rename(columns=labels)
    table.columns.name = None
    return table.sort_index()


def weights_table(details: list[dict], members: list[str]) -> pd.DataFrame:
    """Rows ``(dataset, category, setting, run)``: the weights that fill ``score`` per member and their validation AUROC."""
    rows = []
    for detail in details:
        extra = detail["scorer_details"]
        mode = extra["score_weights"]
        row = {key: detail[key] for key in ("dataset", "category", "setting", "run")}
        row |= {member: f"{w:.3f}" for member, w in zip(members, extra["weights"][mode])}
        searched = extra["validation"]["distributions"].get(mode)
        row["weights"] = mode
        row["validation AUROC"] = "–" if searched is None else f"{100 * searched['validation_auroc']:.1f}"
        rows.append(row)
    return pd.DataFrame(rows).set_index(["dataset", "category", "setting", "run"]).sort_index()


def write_report(ctx: ReportContext) -> list[Path]:
    """Write the ``members`` and ``weights`` tables of the fusion instance the score files name."""
    from fsad.evaluation.collect import read_metrics
    from fsad.evaluation.tables import write_table
    from fsad.io import read_json
    from fsad.score_files import read_score_keys

    if not ctx.score_files:
        raise ValueError("the fusion report needs the instance's score files")
    scorer = read_score_keys(ctx.score_files[0])["scorer"]
    members, mode = list(ctx.params["members"]), ctx.params["score_weights"]
    metrics = read_metrics(ctx.metrics_csv)
    rows = metrics[metrics["scorer"] == scorer]
    written = write_table(
        members_table(metrics, scorer, members, mode),
        ctx.table_files("members"),
        f"{scorer}: image AUROC (%) of the members, their equal-weight sum and the fused score, mean ± std over runs",
        rows,
        ["Members' scores are normalised with the mean and std of their validation scores; weights are searched on the validation set."],
    )
    details = [read_json(path) for path in ctx.detail_files]
    table = weights_table(details, members)
    # The weights column of the CSV is the provenance of the network weights; the table's own column says which scores.
    table = table.rename(columns={"weights": "score weights"})
    written += write_table(table, ctx.table_files("weights"), f"{scorer}: weights chosen on the validation set", rows)
    return written
