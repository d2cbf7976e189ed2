"""One-to-Normal's tables and gallery from hand-made score files, details and metrics."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
from PIL import Image

from fsad.evaluation.collect import evaluate_run
from fsad.evaluation.tables import NA_MISSING, RANDOM_WEIGHTS_NOTE
from fsad.score_files import write_score_table
from fsad.scorers.method import ReportContext
from fsad.scorers.one_to_normal.torch_model import branch_pair_columns
from fsad.scorers.one_to_normal.report import branch_ablation_table, kshot_table, prompt_ablation_table, transfer_table, write_report

from .table_files import csv_table

LABELS = [0, 0, 1, 1]


ALPHA, BETA = 1.0, 0.5


def write_scores(root, run, fixed=True):
    """Four test images: S_P ranks them right, S_N wrong, S_text puts one anomaly on top; the fixed-prompt score ranks
    them wrong. ``score`` is S_P + ALPHA S_N + BETA S_text, as the scorer writes it, with its branch-pair columns."""
    path = root / f"scores/o2n/d/wood/k2/run{run}.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    images = []
    for i in range(4):
        image = root / f"img{i}.png"
        Image.fromarray(np.full((16, 16, 3), 60 * i, np.uint8)).save(image)
        images.append(str(image))
    frame = pd.DataFrame({
        "image_id": [f"img{i}" for i in range(4)], "image_path": images, "label": LABELS, "defect_type": ["good", "good", "hole", "hole"],
        "score": [3.0, 3.0, 5.0, 3.0], "s_p": [0.0, 1.0, 2.0, 3.0], "s_n": [3.0, 2.0, 1.0, 0.0], "s_text": [0.0, 0.0, 4.0, 0.0], "weights": "random",
    })
    frame = frame.assign(**branch_pair_columns({b: frame[b].to_numpy() for b in ("s_p", "s_n", "s_text")}, ALPHA, BETA))
    if fixed:
        frame["score_fixed"] = [3.0, 2.0, 1.0, 0.0]
    write_score_table(frame, {"scorer": "o2n", "method": "one_to_normal", "dataset": "d", "category": "wood", "setting": "k2", "run": run, "weights": "random"}, path)
    return path


def metrics_rows(scorer, values, metric="image_auroc", setting="k2"):
    return [{"dataset": "d", "category": "wood", "setting": setting, "run": run, "scorer": scorer, "metric": metric, "value": v, "weights": "random", "environment": "torch 2.14.1"}
            for run, v in enumerate(values)]


def evaluated(*score_files) -> pd.DataFrame:
    """The metrics code's rows of the score files (``image_auroc:<column>`` for every sub-score column)."""
    return pd.concat([pd.DataFrame(evaluate_run(path, None, map_size=16, fpr_limit=0.3)) for path in score_files], ignore_index=True)


def test_the_branch_ablation_reads_every_combinations_auroc_from_the_metrics(tmp_path):
    table = branch_ablation_table(evaluated(write_scores(tmp_path, 0)), "o2n")
    # by hand, labels 0 0 1 1: S_P + S_N = 3 everywhere (a tie: 50); S_N + S_text/2 = 3 2 3 0 (1.5 of 4 pairs);
    # all three = the score, 3 3 5 3 (3 of 4 pairs)
    expected = {"S_P": "100.0", "S_N": "0.0", "S_text": "75.0", "S_P + S_N": "50.0", "S_P + S_text": "100.0", "S_N + S_text": "37.5", "S_P + S_N + S_text": "75.0"}
    assert {branches: cell for (_, branches), cell in table["d"].items()} == expected
    assert list(table.index.get_level_values("branches")) == list(expected)


def test_the_prompt_ablation_compares_the_fixed_prompt_with_the_selected_one(tmp_path):
    table = prompt_ablation_table(evaluated(write_scores(tmp_path, 0)), "o2n")
    assert table.loc[("k2", "one fixed prompt"), "d"] == "0.0" and table.loc[("k2", "prompt set, SSIM selection"), "d"] == "75.0"
    without = prompt_ablation_table(evaluated(write_scores(tmp_path / "no_fixed", 0, fixed=False)), "o2n")
    assert "fixed_prompt is null" in without.iloc[0, 0]


def test_the_transfer_table_gives_each_pair_without_and_with_the_pool_over_runs():
    metrics = pd.DataFrame(metrics_rows("winclip", [0.80, 0.90]) + metrics_rows("winclip_pool", [0.85, 0.99]))
    table = transfer_table(metrics, [{"without": "winclip", "with": "winclip_pool"}])
    row = table.loc[("d", "k2", "winclip -> winclip_pool")]
    # means 85 and 92, population stds 5 and 7; changes 5 and 9 -> 7.0 ± 2.0
    assert (row["without"], row["with"], row["change"]) == ("85.0 ± 5.0", "92.0 ± 7.0", "7.0 ± 2.0")
    assert "no transfer pairs" in transfer_table(metrics, []).iloc[0, 0]


def test_the_kshot_table_orders_settings_by_shots_with_auroc_and_auprc():
    rows = []
    for setting, value in (("k8", 0.9), ("k2", 0.7), ("k4", 0.8)):
        rows += metrics_rows("o2n", [value, value], setting=setting) + metrics_rows("o2n", [0.5, 0.6], "image_ap", setting)
    table = kshot_table(pd.DataFrame(rows + metrics_rows("other", [0.1])), "o2n")
    assert list(table.columns) == [(s, m) for s in ("k2", "k4", "k8") for m in ("I-AUROC", "I-AUPRC")]
    assert table.loc[("d", "wood"), ("k8", "I-AUROC")] == "90.0 ± 0.0" and table.loc[("d", "mean"), ("k2", "I-AUPRC")] == "55.0 ± 5.0"


def test_the_report_writes_every_table_and_the_gallery_with_the_random_weights_note(tmp_path):
    score_file = write_scores(tmp_path, 0)
    personalized = {f"img{i}": {"file": str(tmp_path / f"img{3 - i}.png"), "prompt": "a photo of normal wood without flaw", "ssim": 0.5, "fixed_file": ""} for i in range(4)}
    details = tmp_path / "run0.json"
    details.write_text(json.dumps({"dataset": "d", "category": "wood", "setting": "k2", "run": 0, "weights": "random", "scorer_details": {"personalized": personalized}}))
    metrics = tmp_path / "metrics.csv"
    evaluated(score_file).assign(environment="torch 2.14.1").to_csv(metrics, index=False)
    written = write_report(ReportContext(metrics_csv=metrics, score_files=[score_file], detail_files=[details], manifests={}, tables_dir=tmp_path / "tables",
                                         figures_dir=tmp_path / "plots", html_dir=tmp_path / "html", params={"alpha": 1.0, "beta": 0.5, "transfer": [], "prompt_study": [], "gallery_categories": 4}))
    names = sorted(p.name for p in written)
    assert names == sorted([f"{t}.{e}" for t in ("kshot", "branch_ablation", "prompt_ablation", "prompt_study", "transfer") for e in ("md", "csv", "tex", "html")] + ["gallery.png"])
    assert all(p.stat().st_size > 0 for p in written)
    assert RANDOM_WEIGHTS_NOTE in (tmp_path / "tables/kshot.md").read_text()
    assert csv_table(tmp_path / "tables/kshot.csv")["weights"].tolist() == ["random", "random"]
    assert Image.open(tmp_path / "plots/gallery.png").size[1] > 200  # 4 example rows


def test_a_category_missing_from_a_run_makes_every_mean_over_the_dataset_not_available(tmp_path):
    """Two categories in run 0, only wood in run 1: the dataset means of run 1 would cover half the dataset."""
    wood = evaluated(write_scores(tmp_path, 0), write_scores(tmp_path, 1))
    metal = wood[wood["run"] == 0].assign(category="metal")
    metrics = pd.concat([wood, metal], ignore_index=True)
    kshot = kshot_table(metrics, "o2n")
    assert kshot.loc[("d", "mean"), ("k2", "I-AUROC")] == NA_MISSING
    assert kshot.loc[("d", "wood"), ("k2", "I-AUROC")] == "75.0 ± 0.0"  # both runs of wood itself
    branches = branch_ablation_table(metrics, "o2n")
    assert set(branches["d"]) == {NA_MISSING}
    transfer = transfer_table(pd.concat([metrics, metrics.assign(scorer="o2n_pool")]), [{"without": "o2n", "with": "o2n_pool"}])
    assert list(transfer.iloc[0]) == [NA_MISSING] * 3
