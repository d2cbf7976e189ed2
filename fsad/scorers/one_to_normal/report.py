"""One-to-Normal's tables and gallery, from the instance's score files, their details and ``metrics.csv``.

- ``kshot``: image AUROC and AUPRC (average precision) per dataset and category for each setting (2, 4, 8 shots in
  the paper's Table 1), ``mean ± std`` over runs, a dataset's mean row over its categories;
- ``branch_ablation``: image AUROC of every non-empty combination of S_P, S_N and S_text with the instance's weights
  (paper Table 4), per setting and dataset;
- ``prompt_ablation``: image AUROC with S_P against the image personalized under one fixed prompt versus the one
  chosen by SSIM among the normal-state prompts (paper Table 5);
- ``prompt_study``: image AUROC and AUPRC of the instances of ``prompt_study`` (the appendix's study of 1, 3, 5 and
  10 personalization prompts: instances whose generators differ in the personalization prompt set only), per setting
  and dataset;
- ``transfer``: image AUROC of each configured pair of memory-scorer instances without and with the generated pool
  among their references (paper Figure 4);
- ``gallery``: query, personalized image and their absolute difference for the best and worst test images of run 0.

Every AUROC is the metrics code's (``image_auroc`` and its ``image_auroc:<column>`` rows of the score files' branch,
pair and fixed-prompt columns); aggregation, missing values and the files are those of :mod:`fsad.evaluation.tables`:
percent, ``mean ± std`` over runs of the per-run mean over all of a dataset's categories.
"""

from __future__ import annotations

from itertools import combinations
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from fsad.evaluation.collect import read_metrics, read_score_files
from fsad.evaluation.gallery import pick_examples
from fsad.evaluation.metrics import SUB_SCORE_PREFIX
from fsad.evaluation.summary import dataset_table, labelled_instances_table, natural_key
from fsad.evaluation.tables import MISSING, category_means, over_runs, percent, stats_cells, with_weights_note, write_table
from fsad.io import read_json, save_figure
from fsad.scorers.method import ReportContext
from fsad.scorers.one_to_normal.torch_model import BRANCHES

KSHOT_METRICS = {"image_auroc": "I-AUROC", "image_ap": "I-AUPRC"}
BRANCH_LABELS = {"s_p": "S_P", "s_n": "S_N", "s_text": "S_text"}


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
    return table[columns].fillna(MISSING)


def branch_combinations() -> list[tuple[str, ...]]:
    """Every non-empty subset of the three branches, singles first."""
    return [combo for size in (1, 2, 3) for combo in combinations(BRANCHES, size)]


def _combination_metric(combo: tuple[str, ...]) -> str:
    """The metrics code's row of a combination's AUROC: a branch's column, a pair's ``branches:`` column, or ``score``."""
    if len(combo) == len(BRANCHES):
        return "image_auroc"
    return SUB_SCORE_PREFIX + (combo[0] if len(combo) == 1 else "branches:" + "+".join(combo))


def _variant_table(metrics: pd.DataFrame, scorer: str, variants: dict[str, str], row: str) -> pd.DataFrame:
    """Rows ``(setting, row label)``, columns datasets: the AUROC of each ``label -> metric`` of ``variants``.

    A dataset's value in a run is the mean over all its categories; percent, mean ± std over runs.
    """
    own = metrics[metrics["scorer"] == scorer]
    rows = percent(own[own["metric"].isin(variants.values())]).assign(**{row: lambda m: m["metric"].map({v: k for k, v in variants.items()})})
    if rows.empty:
        raise ValueError(f"metrics.csv holds none of {sorted(variants.values())} for scorer {scorer!r}; rerun its score and evaluate jobs")
    stats = over_runs(category_means(rows, ["setting", row, "dataset"], own[["dataset", "category"]]), ["setting", row, "dataset"])
    stats["text"] = stats_cells(stats)
    table = stats.pivot(index=["setting", row], columns="dataset", values="text").rename_axis(columns=None)
    order = list(variants)
    return table.loc[sorted(table.index, key=lambda i: (natural_key(i[0]), order.index(i[1])))]


def branch_ablation_table(metrics: pd.DataFrame, scorer: str) -> pd.DataFrame:
    """Rows ``(setting, branches)``, columns datasets: image AUROC of each combination of sub-scores (the instance's weights)."""
    variants = {" + ".join(BRANCH_LABELS[b] for b in combo): _combination_metric(combo) for combo in branch_combinations()}
    return _variant_table(metrics, scorer, variants, "branches")


def prompt_ablation_table(metrics: pd.DataFrame, scorer: str) -> pd.DataFrame:
    """Rows ``(setting, personalization prompt)``, columns datasets: image AUROC with the fixed prompt and with the set."""
    own = metrics[metrics["scorer"] == scorer]
    fixed = own[own["metric"] == SUB_SCORE_PREFIX + "score_fixed"]
    if fixed.empty or len(fixed) != len(own[own["metric"] == "image_auroc"]):
        return pd.DataFrame({"note": ["not computed: the generator's personalization.fixed_prompt is null"]})
    variants = {"one fixed prompt": SUB_SCORE_PREFIX + "score_fixed", "prompt set, SSIM selection": "image_auroc"}
    return _variant_table(metrics, scorer, variants, "prompt")


def prompt_study_table(metrics: pd.DataFrame, study: list[dict[str, str]]) -> pd.DataFrame:
    """Rows ``(setting, prompts)``, columns ``(dataset, metric)``: image AUROC and AUPRC of each study instance."""
    if not study:
        return pd.DataFrame({"note": ["no prompt study configured (the instance's prompt_study parameter)"]})
    return labelled_instances_table(metrics, study, KSHOT_METRICS, row="prompts")


def transfer_table(metrics: pd.DataFrame, pairs: list[dict[str, str]]) -> pd.DataFrame:
    """Rows ``(dataset, setting, scorer pair)``: image AUROC without and with the generated pool, and the change.

    Per run, each instance's value is the mean over all of the dataset's categories; the runs both instances have
    are compared, mean ± std over them.
    """
    if not pairs:
        return pd.DataFrame({"note": ["no transfer pairs configured (the instance's transfer parameter)"]})
    rows = percent(metrics[metrics["metric"] == "image_auroc"])
    out = []
    for pair in pairs:
        both = rows[rows["scorer"].isin([pair["without"], pair["with"]])]
        per_run = category_means(both, ["scorer", "dataset", "setting"], metrics[["dataset", "category"]])
        values = per_run.pivot(index=["dataset", "setting", "run"], columns="scorer", values="value")
        reasons = per_run.pivot(index=["dataset", "setting", "run"], columns="scorer", values="na")
        if not {pair["without"], pair["with"]} <= set(values.columns):
            continue
        shared = reasons[[pair["without"], pair["with"]]].notna().all(axis=1)  # runs both instances were evaluated in
        joined = values.loc[shared, [pair["without"], pair["with"]]].set_axis(["without", "with"], axis=1)
        joined["change"] = joined["with"] - joined["without"]
        na = reasons.loc[shared, [pair["without"], pair["with"]]].set_axis(["without", "with"], axis=1)
        na["change"] = na["without"].where(na["without"] != "", na["with"])
        for (dataset, setting), group in joined.groupby(level=["dataset", "setting"]):
            cell = {}
            for role in ("without", "with", "change"):
                frame = pd.DataFrame({"value": group[role], "na": na.loc[group.index, role], "key": 0})
                cell[role] = stats_cells(over_runs(frame, ["key"]))[0]
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
    """Write the five tables under ``ctx.tables_dir`` and ``gallery.png`` under ``ctx.figures_dir``."""
    params = ctx.params
    scores = read_score_files(ctx.score_files)
    (scorer,) = scores["scorer"].unique()
    metrics = read_metrics(ctx.metrics_csv)
    own = metrics[metrics["scorer"] == scorer]
    transfer_rows = metrics[metrics["scorer"].isin({p[r] for p in params["transfer"] for r in ("without", "with")})]
    study_rows = metrics[metrics["scorer"].isin({entry["scorer"] for entry in params["prompt_study"]})]
    tables = {
        "kshot": (kshot_table(metrics, scorer), own, f"{scorer}: image AUROC and AUPRC (%) per setting"),
        "branch_ablation": (branch_ablation_table(metrics, scorer), own, f"{scorer}: image AUROC (%) of each branch combination"),
        "prompt_ablation": (prompt_ablation_table(metrics, scorer), own, f"{scorer}: image AUROC (%) by personalization prompt"),
        "prompt_study": (prompt_study_table(metrics, params["prompt_study"]), study_rows if len(study_rows) else own,
                         "Image AUROC and AUPRC (%) by number of personalization prompts"),
        "transfer": (transfer_table(metrics, params["transfer"]), transfer_rows if len(transfer_rows) else own, "Image AUROC (%) without and with the generated pool"),
    }
    written = []
    for name, (table, rows, title) in tables.items():
        written += write_table(table, ctx.table_files(name), title, rows)

    examples, setting = gallery_examples(scores, params["gallery_categories"])
    personalized = {}  # (dataset, image_id) -> file, prompt, SSIM of the gallery's setting, run 0
    for detail in map(read_json, ctx.detail_files):
        if detail["run"] == 0 and detail["setting"] == setting:
            personalized |= {(detail["dataset"], i): shown for i, shown in detail["scorer_details"]["personalized"].items()}
    title = with_weights_note(f"{scorer}: query, personalized image, difference ({setting}, run 0)", scores)
    written.append(gallery_figure(examples, personalized, ctx.figures_dir / "gallery.png", title))
    return written
