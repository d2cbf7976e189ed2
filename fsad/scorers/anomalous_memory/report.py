"""The anomalous-samples paper's tables and defect-size figure, from ``metrics.csv``, details JSONs and manifests.

- :func:`one_sample_table`: per-category AUROC of WinCLIP+ with one normal image versus the anomalous-memory score
  with one anomalous image, per dataset with its mean (the paper's Table 1);
- :func:`sub_score_table_test_set` / :func:`sub_score_table_validation_set`: AUROC of each sub-score alone on the
  test set (the metrics code's ``image_auroc:<sub-score>`` rows) and on the augmented validation set (the scorer's
  details), Tables 2 and 3;
- :func:`weight_validation_table`: baseline, random uniform, oracle and Monte-Carlo-validated weights per dataset
  (Table 4);
- :func:`defect_sizes` and :func:`defect_size_figure`: defect area relative to the image per category (Figure 2).

AUROCs are in percent with two decimals, as the paper prints them; aggregation, missing values and the files are
those of :mod:`fsad.evaluation.tables` (a dataset's value in a run is the mean over all its categories). Table 4 also
states, under the table, how ties among Monte-Carlo draws are broken and how many draws tied (:func:`tie_counts`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from fsad.evaluation.collect import read_metrics, read_score_files
from fsad.evaluation.metrics import SUB_SCORE_PREFIX
from fsad.evaluation.tables import MEAN_ROW, MISSING, category_means, mean_std_cells, over_runs, percent, stats_cells, write_table
from fsad.fusion.score_weights import DISTRIBUTIONS, TIE_BREAK
from fsad.io import read_json, save_figure
from fsad.scorers.anomalous_memory.method import TABLES
from fsad.scorers.method import ReportContext

DIGITS = 2
KEYS = ["dataset", "category", "setting", "run"]


def read_details(paths: list[str | Path]) -> list[dict]:
    """Load the scorer details JSONs (``fsad.scorers.run``: dataset, category, setting, run, weights, scorer_details)."""
    return [read_json(path) for path in paths]


def _details_weights(details: list[dict]) -> pd.DataFrame:
    """The ``weights`` provenance of each details JSON, as rows for the weights label."""
    missing = [f"{d.get('dataset')}/{d.get('category')}/{d.get('setting')}/run{d.get('run')}" for d in details if "weights" not in d]
    if missing:
        raise ValueError(f"details of {missing[0]} (and {len(missing) - 1} more) record no weights provenance; rerun their score jobs")
    return pd.DataFrame({"weights": [str(d["weights"]) for d in details]})


def _rows(metrics: pd.DataFrame, scorer: str, setting: str, metric: str) -> pd.DataFrame:
    rows = metrics[(metrics["scorer"] == scorer) & (metrics["setting"] == setting) & (metrics["metric"] == metric)]
    if rows.empty:
        raise ValueError(f"metrics hold no {metric!r} rows of scorer {scorer!r} in setting {setting!r}; run its evaluation first")
    return percent(rows)


def one_sample_table(
    metrics: pd.DataFrame,
    normal: tuple[str, str] = ("winclip", "k1"),
    anomalous: tuple[str, str] = ("anomalous_memory", "a1"),
    metric: str = "image_auroc",
) -> pd.DataFrame:
    """Per-category AUROC (mean ± std over runs) of two (scorer, setting) pairs, each dataset followed by its mean.

    Args:
        metrics: ``metrics.csv`` rows (``dataset, category, setting, run, scorer, metric, value``); values in [0, 1].

    Returns:
        columns ``dataset, category`` (``"mean"`` for a dataset's mean row), then one text column per pair.
    """
    pairs = {"WinCLIP+ (1 normal)": normal, "ours (1 anomalous)": anomalous}
    rows = {label: _rows(metrics, *pair, metric) for label, pair in pairs.items()}
    claimed = pd.concat(rows.values())[["dataset", "category"]]
    columns = {label: mean_std_cells(frame, ["dataset"], claimed, DIGITS) for label, frame in rows.items()}
    index = sorted(set().union(*(c.index for c in columns.values())), key=lambda key: (key[0], key[1] == MEAN_ROW, key[1]))
    table = pd.DataFrame({label: cells.reindex(index) for label, cells in columns.items()})
    table.index = pd.MultiIndex.from_tuples(index, names=["dataset", "category"])
    return table.fillna(MISSING).reset_index()


def sub_score_table_test_set(metrics: pd.DataFrame, scorer: str, setting: str, sub_scores: list[str]) -> pd.DataFrame:
    """AUROC of each sub-score alone on the test set, per category (mean ± std over runs).

    Args:
        metrics: ``metrics.csv`` rows holding the metrics code's ``image_auroc:<sub-score>`` rows of the instance.
        sub_scores: the sub-score columns, e.g. ``fsad.scorers.anomalous_memory.torch_model.sub_score_names``.
    """
    rows = pd.concat([_rows(metrics, scorer, setting, SUB_SCORE_PREFIX + name).assign(sub_score=name) for name in sub_scores])
    return _sub_score_pivot(rows, sub_scores)


def _sub_score_pivot(rows: pd.DataFrame, sub_scores: list[str]) -> pd.DataFrame:
    stats = over_runs(rows, ["dataset", "category", "sub_score"])
    stats["text"] = stats_cells(stats, DIGITS)
    table = stats.pivot(index=["dataset", "category"], columns="sub_score", values="text")
    return table[sub_scores].reset_index().rename_axis(columns=None)


def sub_score_table_validation_set(details: list[dict]) -> pd.DataFrame:
    """AUROC of each sub-score alone on the augmented validation set, per category (mean ± std over runs)."""
    rows, names = [], None
    for entry in details:
        validation = (entry.get("scorer_details") or {}).get("validation")
        if not validation:
            continue
        names = validation["sub_scores"]
        for name, value in validation["validation_sub_score_auroc"].items():
            rows.append({**{k: entry[k] for k in KEYS}, "sub_score": name, "value": np.nan if value is None else 100 * value})
    if not rows:
        raise ValueError("no details JSON holds a weight validation; run anomalous_memory with distributions set")
    return _sub_score_pivot(pd.DataFrame(rows), names)


def weight_validation_table(metrics: pd.DataFrame, scorer: str, setting: str, details: list[dict]) -> pd.DataFrame:
    """The paper's Table 4: rows of weightings, one column per dataset, AUROC mean ± std.

    Rows: baseline weights (the ``image_auroc:score_baseline`` metric); one random uniform draw (every uniform draw's
    test AUROC: mean ± std over draws and runs); the oracle per distribution (best draw on the test set); Monte-Carlo
    on the validation set per distribution (``image_auroc:score_{distribution}``). A dataset's value in a run is the
    mean over all its categories.
    """
    own = metrics[(metrics["scorer"] == scorer) & (metrics["setting"] == setting)]
    claimed = own[["dataset", "category"]]
    columns = own["metric"].str.startswith(SUB_SCORE_PREFIX + "score_")
    per_run = [percent(own[columns]).assign(row=lambda m: m["metric"].str.removeprefix(SUB_SCORE_PREFIX))[[*KEYS, "row", "value"]]]
    draws = []
    for entry in details:
        validation = (entry.get("scorer_details") or {}).get("validation") or {}
        for distribution, result in validation.get("distributions", {}).items():
            base = {k: entry[k] for k in KEYS}
            if result["oracle_test_auroc"] is not None:
                per_run.append(pd.DataFrame([{**base, "row": f"oracle_{distribution}", "value": 100 * result["oracle_test_auroc"]}]))
            if distribution == "uniform":
                draws += [{**base, "draw": i, "value": np.nan if v is None else 100 * v} for i, v in enumerate(result["test_auroc_per_draw"])]
    stats = over_runs(category_means(pd.concat(per_run, ignore_index=True), ["dataset", "row"], claimed), ["dataset", "row"])
    if draws:
        # one random draw: the spread is over draws and runs together
        random = category_means(pd.DataFrame(draws).assign(run=lambda d: d["run"].astype(str) + "/" + d["draw"].astype(str)), ["dataset"], claimed)
        stats = pd.concat([stats, over_runs(random, ["dataset"]).assign(row="random_uniform")], ignore_index=True)
    labels = {"score_baseline": "Baseline weights", "random_uniform": "Random uniform weights (one draw)"}
    for distribution in DISTRIBUTIONS:
        labels[f"oracle_{distribution}"] = f"Oracle: Monte-Carlo on test set ({distribution})"
    for distribution in DISTRIBUTIONS:
        labels[f"score_{distribution}"] = f"Monte-Carlo on validation set ({distribution})"
    stats = stats[stats["row"].isin(labels)].assign(text=lambda s: stats_cells(s, DIGITS))
    table = stats.pivot(index="row", columns="dataset", values="text")
    table = table.loc[[r for r in labels if r in table.index]]
    table.index = [labels[r] for r in table.index]
    # "weighting", not "weights": the CSV's "weights" column holds the backbone weights provenance.
    return table.rename_axis("weighting").reset_index().rename_axis(columns=None)


def tie_counts(details: list[dict]) -> pd.DataFrame:
    """Draws tied at the best validation AUROC, per dataset and distribution.

    Returns:
        ``dataset, distribution, mean_tied`` (mean over categories and runs), ``max_tied``, ``n_draws``,
        ``n_runs``; empty when no details record ``n_tied``.
    """
    rows = []
    for entry in details:
        validation = (entry.get("scorer_details") or {}).get("validation") or {}
        for distribution, result in validation.get("distributions", {}).items():
            if "n_tied" in result:
                rows.append({"dataset": entry["dataset"], "distribution": distribution, "n_tied": result["n_tied"], "n_draws": validation["n_draws"]})
    if not rows:
        return pd.DataFrame(columns=["dataset", "distribution", "mean_tied", "max_tied", "n_draws", "n_runs"])
    return (
        pd.DataFrame(rows)
        .groupby(["dataset", "distribution"], sort=True)
        .agg(mean_tied=("n_tied", "mean"), max_tied=("n_tied", "max"), n_draws=("n_draws", "max"), n_runs=("n_tied", "size"))
        .reset_index()
    )


def weight_validation_notes(details: list[dict]) -> list[str]:
    """The text under Table 4: the tie rule and, per distribution, the mean number of draws tied at the best validation AUROC."""
    notes = [f"Monte-Carlo ties: {TIE_BREAK}."]
    counts = tie_counts(details)
    if counts.empty:
        return notes + ["Tied draws: not recorded in these details files (rerun the scores to record them)."]
    order = {name: i for i, name in enumerate(DISTRIBUTIONS)}
    for distribution, rows in sorted(counts.groupby("distribution"), key=lambda item: order.get(item[0], len(order))):
        per_dataset = ", ".join(
            f"{r.dataset} {r.mean_tied:.1f} of {r.n_draws} (max {r.max_tied})" for r in rows.itertuples()
        )
        notes.append(f"Draws tied at the best validation AUROC, mean over categories and runs ({distribution}): {per_dataset}.")
    return notes


def defect_sizes(manifest: pd.DataFrame) -> pd.DataFrame:
    """Defect area relative to the image for every anomalous image with a mask.

    Args:
        manifest: manifest rows (``category, label, defect_type, mask_path`` at least, plus ``dataset``
            when several datasets are mixed).

    Returns:
        ``dataset`` (when given), ``category``, ``image_id``, ``defect_type``, ``relative_size`` in [0, 1].
    """
    rows = manifest[(manifest["label"] == 1) & (manifest["mask_path"].fillna("") != "")]
    if rows.empty:
        raise ValueError("no anomalous image with a mask in the manifest; defect sizes need pixel masks")
    sizes = [float((np.array(Image.open(path).convert("L")) > 0).mean()) for path in rows["mask_path"]]
    keep = [c for c in ("dataset", "category", "image_id", "defect_type") if c in rows.columns]
    return rows[keep].reset_index(drop=True).assign(relative_size=sizes)


def defect_size_figure(sizes: pd.DataFrame, path: str | Path, title: str = "Defect size relative to the image") -> Path:
    """Box plot of :func:`defect_sizes` per category (log scale), written atomically as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    group = ["dataset", "category"] if "dataset" in sizes.columns else ["category"]
    groups = list(sizes.groupby(group, sort=True)["relative_size"])
    labels = ["/".join(key) if isinstance(key, tuple) else key for key, _ in groups]
    figure, axes = plt.subplots(figsize=(max(6, 0.45 * len(groups)), 4))
    axes.boxplot([values.clip(lower=1e-6).to_numpy() for _, values in groups], showfliers=True)
    axes.set_xticks(range(1, len(labels) + 1), labels, rotation=60, ha="right")
    axes.set_yscale("log")
    axes.set_ylabel("defect area / image area")
    axes.set_title(title)
    figure.tight_layout()
    return save_figure(figure, path, dpi=120)


def write_report(ctx: ReportContext) -> list[Path]:
    """Write the paper's four tables under ``ctx.tables_dir`` and its Figure 2 under ``ctx.figures_dir``.

    ``ctx.score_files`` are one anomalous-memory instance's (one setting), their details hold the validation results
    and sub-score names, the manifests give the defect sizes, and the parameters ``baseline_scorer`` and
    ``baseline_setting`` name the WinCLIP+ results table 1 compares with.
    """
    figure = ctx.figures_dir / "defect_size.png"
    scores = read_score_files(ctx.score_files)
    details = read_details(ctx.detail_files)
    settings = scores[["scorer", "setting"]].drop_duplicates()
    if len(settings) != 1:
        raise ValueError(f"the anomalous-samples tables read one scorer instance in one setting; these score files hold {settings.values.tolist()}")
    anomalous = tuple(settings.iloc[0])
    normal = (ctx.params["baseline_scorer"], ctx.params["baseline_setting"])
    sub_scores = details[0]["scorer_details"]["sub_scores"]
    metrics = read_metrics(ctx.metrics_csv)
    # Table 1 compares the two methods image for image: only datasets the anomalous scorer ran on.
    metrics = metrics[metrics["dataset"].isin(scores["dataset"].unique())]
    pairs = metrics[[(scorer, setting) in (normal, anomalous) for scorer, setting in zip(metrics["scorer"], metrics["setting"])]]
    own = metrics[(metrics["scorer"] == anomalous[0]) & (metrics["setting"] == anomalous[1])]
    details_weights = _details_weights(details)
    tables = [
        (
            one_sample_table(metrics, normal=normal, anomalous=anomalous, metric="image_auroc"),
            "Image AUROC (%) of WinCLIP+ with one normal sample vs the anomalous-memory score with one anomalous sample",
            pairs,
            (),
        ),
        (sub_score_table_test_set(metrics, *anomalous, sub_scores), "AUROC (%) of each sub-score on the test set", own, ()),
        (sub_score_table_validation_set(details), "AUROC (%) of each sub-score on the augmented validation set", details_weights, ()),
        (
            weight_validation_table(metrics, *anomalous, details),
            "Image AUROC (%) per score weighting",
            pd.concat([own[["weights"]], details_weights], ignore_index=True),
            weight_validation_notes(details),
        ),
    ]
    written = []
    for name, (table, caption, rows, notes) in zip(TABLES, tables, strict=True):
        written += write_table(table, ctx.table_files(name), caption, rows, notes)
    frames = [pd.read_csv(path, keep_default_na=False).assign(dataset=name) for name, path in ctx.manifests.items()]
    defect_size_figure(defect_sizes(pd.concat(frames, ignore_index=True)), figure)
    return written + [figure]
