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
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from fsad.evaluation.collect import read_score_files
from fsad.fusion.weights import auroc
from fsad.io import atomic_path, read_json, write_text

KEYS = ["dataset", "category", "setting", "run"]


def read_details(paths: list[str | Path]) -> list[dict]:
    """Load the scorer details JSONs (``fsad.scorers.run``: dataset, category, setting, run, scorer_details)."""
    return [read_json(path) for path in paths]


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
    for distribution in ("uniform", "normal", "student_t"):
        labels[f"oracle_{distribution}"] = f"Oracle: Monte-Carlo on test set ({distribution})"
    for distribution in ("uniform", "normal", "student_t"):
        labels[f"score_{distribution}"] = f"Monte-Carlo on validation set ({distribution})"
    stats = stats[stats["row"].isin(labels)]
    stats["text"] = [format_mean_std(m, s) for m, s in zip(stats["mean"], stats["std"])]
    table = stats.pivot(index="row", columns="dataset", values="text")
    table = table.loc[[r for r in labels if r in table.index]]
    table.index = [labels[r] for r in table.index]
    return table.rename_axis("weights").reset_index()


def write_table(table: pd.DataFrame, stem: str | Path, caption: str) -> list[Path]:
    """Write ``table`` as ``{stem}.md``, ``{stem}.csv`` and ``{stem}.tex`` atomically; returns the paths."""
    stem = Path(stem)
    outputs = {
        ".md": f"{caption}\n\n{table.to_markdown(index=False)}\n",
        ".csv": table.to_csv(index=False),
        ".tex": table.to_latex(index=False, caption=caption, escape=True),
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
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=120, format="png")
    plt.close(figure)
    return path


def write_anomalous_samples_report(
    *,
    metrics_csv: str | Path,
    score_files: list[str | Path],
    detail_files: list[str | Path],
    manifests: dict[str, str | Path],
    sub_scores: list[str],
    out_dir: str | Path,
    figure: str | Path,
    normal: tuple[str, str] = ("winclip", "k1"),
    anomalous: tuple[str, str] = ("anomalous_memory", "a1"),
) -> list[Path]:
    """Write the paper's four tables (Markdown, CSV, LaTeX) under ``out_dir`` and its Figure 2 to ``figure``.

    Args:
        score_files: the anomalous-memory scorer's score parquets.
        detail_files: their details JSONs (validation results).
        manifests: dataset name -> manifest path, for the defect sizes.
    """
    out_dir = Path(out_dir)
    scores = read_score_files(score_files)
    details = read_details(detail_files)
    metrics = pd.read_csv(metrics_csv)
    # Table 1 compares the two methods image for image: only datasets the anomalous scorer ran on.
    metrics = metrics[metrics["dataset"].isin(scores["dataset"].unique())]
    written = write_table(
        one_sample_table(metrics, normal=normal, anomalous=anomalous, metric="image_auroc"),
        out_dir / "table1_one_sample",
        "Image AUROC (%) of WinCLIP+ with one normal sample vs the anomalous-memory score with one anomalous sample",
    )
    written += write_table(
        sub_score_table_test_set(scores, sub_scores), out_dir / "table2_sub_scores_test", "AUROC (%) of each sub-score on the test set"
    )
    written += write_table(
        sub_score_table_validation_set(details),
        out_dir / "table3_sub_scores_validation",
        "AUROC (%) of each sub-score on the augmented validation set",
    )
    written += write_table(
        weight_validation_table(scores, details), out_dir / "table4_weight_validation", "Image AUROC (%) per score weighting"
    )
    frames = [pd.read_csv(path, keep_default_na=False).assign(dataset=name) for name, path in manifests.items()]
    defect_size_figure(defect_sizes(pd.concat(frames, ignore_index=True)), figure)
    return written + [Path(figure)]
