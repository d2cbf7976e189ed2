"""One-to-Normal's tables and gallery, from the instance's score files, their details and ``metrics.csv``.

- ``kshot``: image AUROC and AUPRC (average precision) per dataset and category for each setting (2, 4, 8 shots in
  the paper's Table 1), ``mean ± std`` over runs, a dataset's mean row over its categories;
- ``branch_ablation``: image AUROC of every non-empty combination of S_P, S_N and S_text with the instance's weights
  (paper Table 4), per setting and dataset;
- ``prompt_ablation``: image AUROC with S_P against the image personalized under one fixed prompt versus the one
  chosen by SSIM among the normal-state prompts (paper Table 5);
- ``transfer``: image AUROC of each configured pair of memory-scorer instances without and with the generated pool
  among their references (paper Figure 4);
- ``gallery``: query, personalized image and their absolute difference for the best and worst test images of run 0.

Values are percent, ``mean ± std`` over runs (population std) of the per-run mean over a dataset's categories, as in
:mod:`fsad.evaluation.tables`, whose helpers also write every table (Markdown, CSV, LaTeX) with the weights note.
"""

from __future__ import annotations

import re
from itertools import combinations
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from fsad.evaluation.collect import read_metrics, read_score_files
from fsad.evaluation.gallery import pick_examples
from fsad.evaluation.tables import dataset_table, format_mean_std, with_weights_note, write_table_files
from fsad.fusion.weights import auroc
from fsad.io import read_json, save_figure
from fsad.scorers.method import ReportContext
from fsad.scorers.one_to_normal.torch_model import BRANCHES, combine

KSHOT_METRICS = {"image_auroc": "I-AUROC", "image_ap": "I-AUPRC"}
BRANCH_LABELS = {"s_p": "S_P", "s_n": "S_N", "s_text": "S_text"}
KEYS = ["dataset", "category", "setting", "run"]


def natural_key(name: str) -> tuple:
    """``k2 < k4 < k8 < k16``: digit runs compare as numbers."""
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name))


def _mean_std(per_run: pd.DataFrame, group: list[str]) -> pd.DataFrame:
    """``text`` = mean ± std over runs of the per-run mean over categories of the percent ``value``."""
    runs = per_run.groupby([*group, "run"], sort=False)["value"].mean().reset_index()
    stats = runs.groupby(group, sort=False)["value"].agg(mean="mean", std=lambda v: v.std(ddof=0), n_runs="size").reset_index()
    stats["text"] = [format_mean_std(m, s, n) for m, s, n in zip(stats["mean"], stats["std"], stats["n_runs"])]
    return stats


def kshot_table(metrics: pd.DataFrame, scorer: str) -> pd.DataFrame:
    """Rows ``(dataset, category)`` with a ``mean`` row per dataset; columns ``(setting, metric)``."""
    rows = metrics[metrics["scorer"] == scorer]
    if rows.empty:
        raise ValueError(f"metrics.csv holds no rows of scorer {scorer!r}; run its evaluation first")
    parts = []
    for dataset in sorted(rows["dataset"].unique()):
        table, _ = dataset_table(rows, dataset, KSHOT_METRICS)
        table.columns = table.columns.droplevel(0)  # one scorer
        parts.append(pd.concat({dataset: table}, names=["dataset", "category"]))
    table = pd.concat(parts)
    columns = sorted(table.columns, key=lambda c: (natural_key(c[0]), list(KSHOT_METRICS.values()).index(c[1])))
    return table[columns].fillna("–")


def branch_combinations() -> list[tuple[str, ...]]:
    """Every non-empty subset of the three branches, singles first."""
    return [combo for size in (1, 2, 3) for combo in combinations(BRANCHES, size)]


def branch_ablation_table(scores: pd.DataFrame, alpha: float, beta: float) -> pd.DataFrame:
    """Rows ``(setting, branches)``, columns datasets: image AUROC of each combination of sub-scores."""
    rows = []
    for keys, group in scores.groupby(KEYS, sort=False):
        values = {b: group[b].to_numpy() for b in BRANCHES}
        for combo in branch_combinations():
            label = " + ".join(BRANCH_LABELS[b] for b in combo)
            rows.append({**dict(zip(KEYS, keys)), "branches": label, "value": 100 * auroc(combine(values, alpha, beta, combo), group["label"].to_numpy())})
    stats = _mean_std(pd.DataFrame(rows), ["setting", "branches", "dataset"])
    table = stats.pivot(index=["setting", "branches"], columns="dataset", values="text")
    order = [" + ".join(BRANCH_LABELS[b] for b in combo) for combo in branch_combinations()]
    index = sorted(table.index, key=lambda i: (natural_key(i[0]), order.index(i[1])))
    return table.loc[index]


def prompt_ablation_table(scores: pd.DataFrame) -> pd.DataFrame:
    """Rows ``(setting, personalization prompt)``, columns datasets: image AUROC with the fixed prompt and with the set."""
    if "score_fixed" not in scores.columns or scores["score_fixed"].isna().any():
        return pd.DataFrame({"note": ["not computed: the generator's personalization.fixed_prompt is null"]})
    variants = {"one fixed prompt": "score_fixed", "prompt set, SSIM selection": "score"}
    rows = [
        {**dict(zip(KEYS, keys)), "prompt": label, "value": 100 * auroc(group[column].to_numpy(), group["label"].to_numpy())}
        for keys, group in scores.groupby(KEYS, sort=False)
        for label, column in variants.items()
    ]
    stats = _mean_std(pd.DataFrame(rows), ["setting", "prompt", "dataset"])
    table = stats.pivot(index=["setting", "prompt"], columns="dataset", values="text")
    return table.loc[sorted(table.index, key=lambda i: (natural_key(i[0]), list(variants).index(i[1])))]


def transfer_table(metrics: pd.DataFrame, pairs: list[dict[str, str]]) -> pd.DataFrame:
    """Rows ``(dataset, setting, scorer pair)``: image AUROC without and with the generated pool, and the change."""
    if not pairs:
        return pd.DataFrame({"note": ["no transfer pairs configured (the instance's transfer parameter)"]})
    rows = metrics[metrics["metric"] == "image_auroc"].assign(value=lambda m: m["value"].astype(float) * 100)
    out = []
    for pair in pairs:
        both = {role: rows[rows["scorer"] == pair[role]] for role in ("without", "with")}
        runs = {role: frame.groupby(["dataset", "setting", "run"])["value"].mean() for role, frame in both.items()}
        joined = pd.concat(runs, axis=1).dropna()
        joined["change"] = joined["with"] - joined["without"]
        for (dataset, setting), group in joined.groupby(level=["dataset", "setting"]):
            n = len(group)
            cell = {role: format_mean_std(group[role].mean(), group[role].std(ddof=0), n) for role in ("without", "with", "change")}
            out.append({"dataset": dataset, "setting": setting, "pair": f"{pair['without']} -> {pair['with']}", **cell})
    if not out:
        return pd.DataFrame({"note": ["the transfer pairs share no evaluated (dataset, setting, run)"]})
    table = pd.DataFrame(out).set_index(["dataset", "setting", "pair"])
    return table.loc[sorted(table.index, key=lambda i: (i[0], natural_key(i[1]), i[2]))]


def _square(path: str, size: int) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB").resize((size, size), Image.Resampling.BICUBIC), dtype=np.float32) / 255.0


def gallery_figure(examples: pd.DataFrame, personalized: dict[str, dict], path: str | Path, title: str) -> Path:
    """One row per example: the query, its personalized image (prompt and SSIM), ``|query - personalized|`` (RGB mean).

    Args:
        examples: :func:`gallery_examples` rows (``dataset, category, image_id, image_path, label, score, verdict``).
        personalized: ``(dataset, image_id)`` -> ``file``, ``prompt``, ``ssim`` of its personalized image.
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    figure, axes = plt.subplots(len(examples), 3, figsize=(7.5, 2.4 * len(examples)), squeeze=False, layout="constrained")
    for row, example in enumerate(examples.itertuples()):
        shown = personalized[(example.dataset, example.image_id)]
        with Image.open(shown["file"]) as image:
            size = image.size[0]
        query, personal = _square(example.image_path, size), _square(shown["file"], size)
        label = "anomalous" if example.label == 1 else "normal"
        axes[row, 0].imshow(query)
        axes[row, 0].set_title(f"{example.dataset}/{example.category} {example.verdict}: {label}\nscore {example.score:.3f}", fontsize=7)
        axes[row, 1].imshow(personal)
        axes[row, 1].set_title(f"personalized, SSIM {shown['ssim']:.3f}\n{shown['prompt']}", fontsize=7)
        difference = axes[row, 2].imshow(np.abs(query - personal).mean(axis=-1), cmap="inferno", vmin=0, vmax=1)
        axes[row, 2].set_title("|query - personalized|", fontsize=8)
        for axis in axes[row]:
            axis.set_xticks([])
            axis.set_yticks([])
    figure.colorbar(difference, ax=axes.ravel().tolist(), shrink=0.4, label="mean absolute RGB difference")
    figure.suptitle(title, fontsize=10)
    return save_figure(figure, path, dpi=90)


def gallery_examples(scores: pd.DataFrame, categories_per_dataset: int) -> tuple[pd.DataFrame, str]:
    """Best and worst test images (one per group, :func:`pick_examples`) of run 0 of the setting with the most shots."""
    setting = max(scores["setting"].unique(), key=natural_key)
    chosen = scores[(scores["setting"] == setting) & (scores["run"] == 0)]
    parts = []
    for dataset in sorted(chosen["dataset"].unique()):
        for category in sorted(chosen.loc[chosen["dataset"] == dataset, "category"].unique())[:categories_per_dataset]:
            part = chosen[(chosen["dataset"] == dataset) & (chosen["category"] == category)]
            parts.append(pick_examples(part.reset_index(drop=True), n=1))
    return pd.concat(parts, ignore_index=True), setting


def write_report(ctx: ReportContext) -> list[Path]:
    """Write the four tables under ``ctx.out_dir`` (``.md``, ``.csv``, ``.tex``) and ``gallery.png`` under ``ctx.figures_dir``."""
    params = ctx.params
    scores = read_score_files(ctx.score_files)
    (scorer,) = scores["scorer"].unique()
    metrics = read_metrics(ctx.metrics_csv)
    own = metrics[metrics["scorer"] == scorer]
    transfer_rows = metrics[metrics["scorer"].isin({p[r] for p in params["transfer"] for r in ("without", "with")})]
    tables = {
        "kshot": (kshot_table(metrics, scorer), own, f"{scorer}: image AUROC and AUPRC (%) per setting"),
        "branch_ablation": (branch_ablation_table(scores, params["alpha"], params["beta"]), scores, f"{scorer}: image AUROC (%) of each branch combination"),
        "prompt_ablation": (prompt_ablation_table(scores), scores, f"{scorer}: image AUROC (%) by personalization prompt"),
        "transfer": (transfer_table(metrics, params["transfer"]), transfer_rows if len(transfer_rows) else own, "Image AUROC (%) without and with the generated pool"),
    }
    written = []
    for name, (table, rows, title) in tables.items():
        paths = [ctx.out_dir / f"{name}.{ext}" for ext in ("md", "csv", "tex")]
        write_table_files(table, rows, title, *paths)
        written += paths

    examples, setting = gallery_examples(scores, params["gallery_categories"])
    personalized = {}  # (dataset, image_id) -> file, prompt, SSIM of the gallery's setting, run 0
    for detail in map(read_json, ctx.detail_files):
        if detail["run"] == 0 and detail["setting"] == setting:
            personalized |= {(detail["dataset"], i): shown for i, shown in detail["scorer_details"]["personalized"].items()}
    title = with_weights_note(f"{scorer}: query, personalized image, difference ({setting}, run 0)", scores)
    written.append(gallery_figure(examples, personalized, ctx.figures_dir / "gallery.png", title))
    return written
