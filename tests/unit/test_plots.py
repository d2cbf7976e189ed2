"""Figures are written as non-empty PNGs from score files and metrics, also from random-weight results."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from fsad.evaluation.collect import read_score_files
from fsad.evaluation.metrics import image_auroc
from fsad.evaluation import plots
from fsad.evaluation.plots import auroc_bar_chart, roc_figure
from fsad.evaluation.tables import RANDOM_WEIGHTS_NOTE
from fsad.score_files import write_score_table

WEIGHTS = "random (fallback: test)"
PRETRAINED = "laion400m_e31"


def write_score_files(root, categories=("bottle", "metal_nut", "screw"), methods=(("winclip", "zs"), ("winclip", "k1")), runs=2,
                      weights=WEIGHTS):
    rng = np.random.default_rng(0)
    paths = []
    for category in categories:
        for scorer, setting in methods:
            for run in range(runs):
                labels = np.repeat([0, 1], 10)
                path = root / "scores" / scorer / "mvtec_ad" / category / setting / f"run{run}.parquet"
                path.parent.mkdir(parents=True, exist_ok=True)
                frame = pd.DataFrame({"image_id": [f"{category}{i}" for i in range(20)], "label": labels,
                                      "score": rng.normal(size=20) + labels, "weights": weights})
                keys = {"scorer": scorer, "method": scorer, "dataset": "mvtec_ad", "category": category, "setting": setting,
                        "run": run, "weights": weights}
                write_score_table(frame, keys, path)
                paths.append(path)
    return paths


def metrics_of(scores: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for (scorer, dataset, category, setting, run), group in scores.groupby(["scorer", "dataset", "category", "setting", "run"]):
        rows.append({"dataset": dataset, "category": category, "setting": setting, "run": run, "scorer": scorer,
                     "metric": "image_auroc", "value": image_auroc(group["score"].to_numpy(), group["label"].to_numpy()),
                     "weights": group["weights"].iloc[0]})
    return pd.DataFrame(rows)


def assert_png(path) -> None:
    assert path.stat().st_size > 1000
    with Image.open(path) as image:
        assert image.format == "PNG" and min(image.size) > 200


def test_roc_figure_has_a_panel_per_category(tmp_path):
    scores = read_score_files(write_score_files(tmp_path))
    roc_figure(scores, "mvtec_ad", tmp_path / "plots" / "roc_mvtec_ad.png")
    assert_png(tmp_path / "plots" / "roc_mvtec_ad.png")


def test_roc_figure_with_many_methods_puts_one_legend_outside(tmp_path):
    methods = [("winclip", s) for s in ("zs", "k1", "k2", "k4")] + [("anomalous_memory", "a1")]
    scores = read_score_files(write_score_files(tmp_path, categories=("bottle",), methods=methods, runs=1))
    roc_figure(scores, "mvtec_ad", tmp_path / "roc.png")
    assert_png(tmp_path / "roc.png")


def test_auroc_bar_chart_is_written(tmp_path):
    metrics = metrics_of(read_score_files(write_score_files(tmp_path)))
    auroc_bar_chart(metrics, "mvtec_ad", tmp_path / "plots" / "auroc_mvtec_ad.png")
    assert_png(tmp_path / "plots" / "auroc_mvtec_ad.png")


def drawn_titles(monkeypatch, draw) -> list[str]:
    """The figure title and axes titles of what ``draw()`` would save."""
    figures = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: figures.append(fig))
    draw()
    (fig,) = figures
    return [fig._suptitle.get_text() if fig._suptitle else ""] + [ax.get_title() for ax in fig.axes]


@pytest.mark.parametrize("weights, labelled", [(WEIGHTS, True), (PRETRAINED, False)])
def test_roc_figure_title_says_when_the_scores_used_random_weights(tmp_path, monkeypatch, weights, labelled):
    scores = read_score_files(write_score_files(tmp_path, runs=1, weights=weights))
    titles = drawn_titles(monkeypatch, lambda: roc_figure(scores, "mvtec_ad", tmp_path / "roc.png"))
    assert (RANDOM_WEIGHTS_NOTE in titles[0]) is labelled


@pytest.mark.parametrize("weights, labelled", [(WEIGHTS, True), (PRETRAINED, False)])
def test_auroc_bar_chart_title_says_when_the_metrics_used_random_weights(tmp_path, monkeypatch, weights, labelled):
    metrics = metrics_of(read_score_files(write_score_files(tmp_path, runs=1, weights=weights)))
    titles = drawn_titles(monkeypatch, lambda: auroc_bar_chart(metrics, "mvtec_ad", tmp_path / "bars.png"))
    assert any(RANDOM_WEIGHTS_NOTE in title for title in titles) is labelled
