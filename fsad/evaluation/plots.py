"""Figures of one dataset: image-level ROC curves and a per-category image AUROC bar chart (PNG, Agg backend).

A figure whose rows include random (fallback) weights says so under its title (:func:`fsad.evaluation.tables.with_weights_note`).
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen before pyplot loads)
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from sklearn.metrics import roc_auc_score, roc_curve  # noqa: E402

from fsad.evaluation.summary import dataset_table  # noqa: E402
from fsad.evaluation.tables import MEAN_ROW, with_weights_note  # noqa: E402
from fsad.io import save_figure  # noqa: E402

PANEL_COLUMNS = 4
LEGEND_INSIDE_MAX = 4


def roc_figure(scores: pd.DataFrame, dataset: str, path: str | Path) -> None:
    """Image-level ROC curves of ``dataset``: one panel per category, one curve per scorer/setting (runs pooled).

    Args:
        scores: score rows of several files with ``scorer, dataset, category, setting, run, label, score, weights``
            (``fsad.evaluation.collect.read_score_files``).
        dataset: the dataset to plot.
        path: the PNG to write.
    """
    rows = scores[scores["dataset"] == dataset]
    if rows.empty:
        raise ValueError(f"no score rows of dataset {dataset!r} to plot")
    categories = sorted(rows["category"].unique())
    methods = sorted(rows.groupby(["scorer", "setting"]).groups)
    n_columns = min(PANEL_COLUMNS, len(categories))
    n_rows = math.ceil(len(categories) / n_columns)
    fig, axes = plt.subplots(n_rows, n_columns, figsize=(3.6 * n_columns, 3.4 * n_rows), squeeze=False)
    colors = plt.get_cmap("tab10")
    for ax, category in zip(axes.flat, categories):
        for index, (scorer, setting) in enumerate(methods):
            run_rows = rows[(rows["category"] == category) & (rows["scorer"] == scorer) & (rows["setting"] == setting)]
            if run_rows["label"].nunique() < 2:
                continue
            fpr, tpr, _ = roc_curve(run_rows["label"], run_rows["score"])
            auroc = roc_auc_score(run_rows["label"], run_rows["score"])
            ax.plot(fpr, tpr, color=colors(index % 10), label=f"{scorer} {setting} ({100 * auroc:.1f})")
        ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=0.8)
        ax.set(title=category, xlabel="false positive rate", ylabel="true positive rate", xlim=(0, 1), ylim=(0, 1.01))
        ax.set_aspect("equal")
        if len(methods) <= LEGEND_INSIDE_MAX:
            ax.legend(loc="lower right", fontsize="x-small", title="AUROC %", title_fontsize="x-small")
    for ax in axes.flat[len(categories):]:
        ax.set_visible(False)
    if len(methods) > LEGEND_INSIDE_MAX:
        handles = [plt.Line2D([], [], color=colors(i % 10)) for i in range(len(methods))]
        fig.legend(handles, [f"{s} {t}" for s, t in methods], loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize="small")
    fig.suptitle(with_weights_note(f"{dataset}: image-level ROC (runs pooled)", rows))
    fig.tight_layout()
    save_figure(fig, path, dpi=120, bbox_inches="tight")


def auroc_bar_chart(metrics: pd.DataFrame, dataset: str, path: str | Path, metric: str = "image_auroc") -> None:
    """Per-category bars of ``metric`` (default image AUROC, %), one bar per scorer/setting, error bars = std over runs.

    The last group is the dataset mean (mean over categories per run, then over runs), as in the tables.
    """
    _, stats = dataset_table(metrics, dataset, {metric: metric})
    methods = sorted(stats.groupby(["scorer", "setting"]).groups)
    categories = sorted(c for c in stats["category"].unique() if c != MEAN_ROW) + [MEAN_ROW]
    width = 0.8 / len(methods)
    positions = np.arange(len(categories))
    fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(categories) * max(1, len(methods) / 2)), 4.2))
    for index, (scorer, setting) in enumerate(methods):
        method = stats[(stats["scorer"] == scorer) & (stats["setting"] == setting)].set_index("category").reindex(categories)
        ax.bar(
            positions + (index - (len(methods) - 1) / 2) * width,
            method["mean"],
            width,
            yerr=method["std"].where(method["n_runs"] > 1),
            capsize=2,
            label=f"{scorer} {setting}",
        )
    ax.axhline(50, color="grey", linestyle=":", linewidth=0.8)
    ax.set_xticks(positions, categories, rotation=30, ha="right")
    ax.set(ylim=(0, 100), ylabel=f"{metric} (%)", xlabel="category")
    ax.set_title(with_weights_note(f"{dataset}: {metric} per category (mean ± std over runs)", metrics[metrics["dataset"] == dataset]))
    ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize="small")
    fig.tight_layout()
    save_figure(fig, path, dpi=120, bbox_inches="tight")
