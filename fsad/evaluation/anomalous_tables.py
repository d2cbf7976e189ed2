"""Tables and the defect-size figure of the anomalous-samples paper, from score files, details JSONs and metrics.

- :func:`one_sample_table`: per-category AUROC of WinCLIP+ with one normal image versus the
  anomalous-memory score with one anomalous image, per dataset with its mean (the paper's Table 1);
- :func:`sub_score_table_test_set` / :func:`sub_score_table_validation_set`: AUROC of each sub-score alone on the
  test set and on the augmented validation set (Tables 2 and 3);
- :func:`weight_validation_table`: baseline, random uniform, oracle and Monte-Carlo-validated weights per
  dataset (Table 4);
- :func:`defect_sizes` and :func:`defect_size_figure`: defect area relative to the image per category (Figure 2).

AUROCs are in percent. ``mean ± std`` is over runs (over draws and runs for the random uniform row); a
dataset's value in a run is the mean over its categories.

Every table states the backbone weights provenance of the rows it was built from and, when any used
random (fallback) weights, carries the random-weights note (the helpers of :mod:`fsad.evaluation.tables`):
in bold above the Markdown and LaTeX tables, and in a ``weights`` column of the CSV. Table 4 also states,
under the table, how ties among Monte-Carlo draws are broken and how many draws tied (:func:`tie_counts`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from fsad.evaluation.collect import read_metrics, read_score_files
from fsad.evaluation.tables import latex_escape, latex_weights_lines, markdown_weights_lines, weights_provenance
from fsad.fusion.weights import DISTRIBUTIONS, TIE_BREAK, auroc
from fsad.io import read_json, save_figure, write_text
from fsad.scorers.method import ReportContext

KEYS = ["dataset", "category", "setting", "run"]
# The four tables' base names, in table order, as written under the report's table directory.
TABLES = ["table1_one_sample", "table2_sub_scores_test", "table3_sub_scores_validation", "table4_weight_validation"]


def read_details(paths: list[str | Path]) -> list[dict]:
    """Load the scorer details JSONs (``fsad.scorers.run``: dataset, category, setting, run, weights, scorer_details)."""
    return [read_json(path) for path in paths]


def _details_weights(details: list[dict]) -> pd.DataFrame:
    """The ``weights`` provenance of each details JSON, as rows for the weights label."""
    missing = [f"{d.get('dataset')}/{d.get('category')}/{d.get('setting')}/run{d.get('run')}" for d in details if "weights" not in d]
    if missing:
        raise ValueError(f"details of {missing[0]} (and {len(missing) - 1} more) record no weights provenance; rerun their score jobs")
    return pd.DataFrame({"weights": [str(d["weights"]) for d in details]})


def format_mean_std(mean: float, std: float | None = None, digits: int = 2) -> str:
    """``"81.64 ± 0.10"``, ``"81.64"`` without std, ``"n/a"`` for NaN."""
    if mean is None or np.isnan(mean):
        return "n/a"
    return f"{mean:.{digits}f}" if std is None or np.isnan(std) else f"{mean:.{digits}f} ± {std:.{digits}f}"


def _mean_std_over_runs(per_run: pd.DataFrame, group: list[str], value: str = "auroc") -> pd.DataFrame:
    return per_run.groupby(group, sort=False)[value].agg(mean="mean", std=lambda v: v.std(ddof=0)).reset_index()


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
    columns = {}
    for label, (scorer, setting) in {"WinCLIP+ (1 normal)": normal, "ours (1 anomalous)": anomalous}.items():
        rows = metrics[(metrics["scorer"] == scorer) & (metrics["setting"] == setting) & (metrics["metric"] == metric)]
        if rows.empty:
            raise ValueError(f"metrics hold no {metric!r} rows of scorer {scorer!r} in setting {setting!r}; run its evaluation first")
        per_run = rows.assign(auroc=rows["value"] * 100)[["dataset", "category", "run", "auroc"]]
        dataset_means = per_run.groupby(["dataset", "run"], as_index=False)["auroc"].mean().assign(category="mean")
        stats = _mean_std_over_runs(pd.concat([dataset_means, per_run]), ["dataset", "category"])
        columns[label] = stats.set_index(["dataset", "category"]).apply(lambda r: format_mean_std(r["mean"], r["std"]), axis=1)
    return pd.DataFrame(columns).reset_index()


def _per_run_sub_score_aurocs(scores: pd.DataFrame, sub_scores: list[str]) -> pd.DataFrame:
    rows = []
    for key, run_scores in scores.groupby(KEYS, sort=False):
        labels = run_scores["label"].to_numpy()
        rows += [dict(zip(KEYS, key), sub_score=name, auroc=100 * auroc(run_scores[name].to_numpy(), labels)) for name in sub_scores]
    return pd.DataFrame(rows)


def _sub_score_pivot(per_run: pd.DataFrame, sub_scores: list[str]) -> pd.DataFrame:
    stats = _mean_std_over_runs(per_run, ["dataset", "category", "sub_score"])
    stats["text"] = [format_mean_std(m, s) for m, s in zip(stats["mean"], stats["std"])]
    table = stats.pivot(index=["dataset", "category"], columns="sub_score", values="text")
    return table[sub_scores].reset_index()


def sub_score_table_test_set(scores: pd.DataFrame, sub_scores: list[str]) -> pd.DataFrame:
    """AUROC of each sub-score alone on the test set, per category (mean ± std over runs).

    Args:
        scores: :func:`read_score_files` rows of the anomalous-memory scorer (one setting).
        sub_scores: the sub-score columns, e.g. ``fsad.scorers.anomalous_memory.torch_model.sub_score_names``.
    """
    return _sub_score_pivot(_per_run_sub_score_aurocs(scores, sub_scores), sub_scores)


def sub_score_table_validation_set(details: list[dict]) -> pd.DataFrame:
    """AUROC of each sub-score alone on the augmented validation set, per category (mean ± std over runs)."""
    rows, names = [], None
    for entry in details:
        validation = (entry.get("scorer_details") or {}).get("validation")
        if not validation:
            continue
        names = validation["sub_scores"]
        for name, value in validation["validation_sub_score_auroc"].items():
            rows.append({**{k: entry[k] for k in KEYS}, "sub_score": name, "auroc": np.nan if value is None else 100 * value})
    if not rows:
        raise ValueError("no details JSON holds a weight validation; run anomalous_memory with distributions set")
    return _sub_score_pivot(pd.DataFrame(rows), names)


def weight_validation_table(scores: pd.DataFrame, details: list[dict]) -> pd.DataFrame:
    """The paper's Table 4: rows of weightings, one column per dataset, AUROC mean ± std.

    Rows: baseline weights (``score_baseline``); one random uniform draw (every uniform draw's test AUROC:
    mean ± std over draws and runs); the oracle per distribution (best draw on the test set); Monte-Carlo
    on the validation set per distribution (``score_{distribution}``).
    """
    per_run = []
    for key, run_scores in scores.groupby(KEYS, sort=False):
        labels = run_scores["label"].to_numpy()
        columns = [c for c in run_scores.columns if c.startswith("score_")]
        per_run += [dict(zip(KEYS, key), row=c, auroc=100 * auroc(run_scores[c].to_numpy(), labels)) for c in columns]
    draws = []
    for entry in details:
        validation = (entry.get("scorer_details") or {}).get("validation") or {}
        for distribution, result in validation.get("distributions", {}).items():
            base = {k: entry[k] for k in KEYS}
            if result["oracle_test_auroc"] is not None:
                per_run.append({**base, "row": f"oracle_{distribution}", "auroc": 100 * result["oracle_test_auroc"]})
            if distribution == "uniform":
                draws += [{**base, "draw": i, "auroc": np.nan if v is None else 100 * v} for i, v in enumerate(result["test_auroc_per_draw"])]
    per_run = pd.DataFrame(per_run).groupby(["dataset", "run", "row"], as_index=False)["auroc"].mean()
    stats = _mean_std_over_runs(per_run, ["dataset", "row"])
    if draws:
        random = pd.DataFrame(draws).groupby(["dataset", "run", "draw"], as_index=False)["auroc"].mean()
        random_stats = random.groupby("dataset")["auroc"].agg(mean="mean", std=lambda v: v.std(ddof=0)).reset_index()
        stats = pd.concat([stats, random_stats.assign(row="random_uniform")], ignore_index=True)
    labels = {"score_baseline": "Baseline weights", "random_uniform": "Random uniform weights (one draw)"}
    for distribution in DISTRIBUTIONS:
        labels[f"oracle_{distribution}"] = f"Oracle: Monte-Carlo on test set ({distribution})"
    for distribution in DISTRIBUTIONS:
        labels[f"score_{distribution}"] = f"Monte-Carlo on validation set ({distribution})"
    stats = stats[stats["row"].isin(labels)]
    stats["text"] = [format_mean_std(m, s) for m, s in zip(stats["mean"], stats["std"])]
    table = stats.pivot(index="row", columns="dataset", values="text")
    table = table.loc[[r for r in labels if r in table.index]]
    table.index = [labels[r] for r in table.index]
    # "weighting", not "weights": the CSV's "weights" column holds the backbone weights provenance.
    return table.rename_axis("weighting").reset_index()


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


def _latex_table(table: pd.DataFrame, caption: str, notes: list[str]) -> str:
    """LaTeX ``table`` environment: escaped cells and headers, ``$\\pm$``, ``notes`` in small print under the tabular."""
    cells = table.map(lambda cell: latex_escape(cell).replace("±", r"$\pm$"))
    cells.columns = [latex_escape(column) for column in table.columns]
    latex = cells.to_latex(index=False, caption=latex_escape(caption), escape=False)
    if not notes:
        return latex
    return latex.replace("\\end{table}", "\\par\\smallskip\\footnotesize " + " ".join(map(latex_escape, notes)) + "\n\\end{table}")


def write_table(table: pd.DataFrame, stem: str | Path, caption: str, weights: pd.DataFrame, notes: list[str] | None = None) -> list[Path]:
    """Write ``table`` as ``{stem}.md``, ``{stem}.csv`` and ``{stem}.tex`` atomically; returns the paths.

    Args:
        weights: the rows the table was built from (a ``weights`` column): their provenance, and the
            random-weights note when any used random weights, go above the table (a ``weights`` column in the CSV).
        notes: sentences printed under the table (Markdown and LaTeX).
    """
    if "weights" in table.columns:
        raise ValueError(f"{stem}: the table has its own 'weights' column, which the CSV's weights provenance column would overwrite")
    stem = Path(stem)
    notes = notes or []
    outputs = {
        ".md": "\n".join([caption, "", *markdown_weights_lines(weights), "", table.to_markdown(index=False, disable_numparse=True), *(["", *notes] if notes else []), ""]),
        ".csv": table.assign(weights="; ".join(weights_provenance(weights))).to_csv(index=False),
        ".tex": "\n".join([*latex_weights_lines(weights), _latex_table(table, caption, notes)]),
    }
    paths = [stem.with_suffix(suffix) for suffix in outputs]
    for path, text in zip(paths, outputs.values()):
        write_text(path, text)
    return paths


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


def write_anomalous_samples_report(ctx: ReportContext) -> list[Path]:
    """Write the paper's four tables (Markdown, CSV, LaTeX) under ``ctx.out_dir`` and its Figure 2 under ``ctx.figures_dir``.

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
    if "weights" not in scores.columns:
        raise ValueError(f"score files such as {ctx.score_files[0]} have no 'weights' column, so the weights provenance is unknown; rerun their score jobs")
    # Table 1 compares the two methods image for image: only datasets the anomalous scorer ran on.
    metrics = metrics[metrics["dataset"].isin(scores["dataset"].unique())]
    pairs = metrics[[(scorer, setting) in (normal, anomalous) for scorer, setting in zip(metrics["scorer"], metrics["setting"])]]
    details_weights = _details_weights(details)
    tables = [
        (
            one_sample_table(metrics, normal=normal, anomalous=anomalous, metric="image_auroc"),
            "Image AUROC (%) of WinCLIP+ with one normal sample vs the anomalous-memory score with one anomalous sample",
            pairs,
            None,
        ),
        (sub_score_table_test_set(scores, sub_scores), "AUROC (%) of each sub-score on the test set", scores, None),
        (sub_score_table_validation_set(details), "AUROC (%) of each sub-score on the augmented validation set", details_weights, None),
        (
            weight_validation_table(scores, details),
            "Image AUROC (%) per score weighting",
            pd.concat([scores[["weights"]], details_weights], ignore_index=True),
            weight_validation_notes(details),
        ),
    ]
    written = []
    for name, (table, caption, weights, notes) in zip(TABLES, tables, strict=True):
        written += write_table(table, ctx.out_dir / name, caption, weights, notes)
    frames = [pd.read_csv(path, keep_default_na=False).assign(dataset=name) for name, path in ctx.manifests.items()]
    defect_size_figure(defect_sizes(pd.concat(frames, ignore_index=True)), figure)
    return written + [figure]
