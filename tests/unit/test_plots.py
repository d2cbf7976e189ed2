"""Figures read back from the matplotlib objects: a panel per category with sklearn's ROC curves, one legend,
bar heights equal to the mean AUROC over runs, the random-weights label; and PNG files written."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib.container import BarContainer
from matplotlib.figure import Figure
from PIL import Image
from sklearn.metrics import roc_auc_score, roc_curve

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


@pytest.fixture
def drawn(monkeypatch):
    """``drawn(draw)``: the figure ``draw()`` saves, kept open to be read back (closed after the test)."""
    figures = []
    monkeypatch.setattr(plots, "save_figure", lambda fig, path, **kwargs: figures.append(fig))

    def draw(call) -> Figure:
        call()
        assert len(figures) == 1
        return figures.pop()

    yield draw
    plt.close("all")


def pooled_roc(scores: pd.DataFrame, category: str, scorer: str, setting: str) -> tuple[np.ndarray, np.ndarray, float]:
    """sklearn's ROC curve and AUROC of one method on one category, runs pooled."""
    rows = scores[(scores["category"] == category) & (scores["scorer"] == scorer) & (scores["setting"] == setting)]
    fpr, tpr, _ = roc_curve(rows["label"], rows["score"])
    return fpr, tpr, roc_auc_score(rows["label"], rows["score"])


def test_roc_figure_has_one_panel_per_category_with_each_methods_pooled_curve_and_auroc(tmp_path, drawn):
    categories = ("screw", "bottle", "metal_nut", "cable", "grid")
    scores = read_score_files(write_score_files(tmp_path, categories=categories))
    fig = drawn(lambda: roc_figure(scores, "mvtec_ad", tmp_path / "roc.png"))
    panels = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in panels] == sorted(categories)
    assert len(fig.axes) == 8  # 4 columns x 2 rows, the last 3 hidden
    methods = [("winclip", "k1"), ("winclip", "zs")]
    for ax in panels:
        curves = [line for line in ax.get_lines() if line.get_linestyle() != ":"]
        assert len(curves) == len(methods)
        legend = ax.get_legend()
        assert legend is not None and legend.get_title().get_text() == "AUROC %"
        for curve, text, (scorer, setting) in zip(curves, legend.get_texts(), methods, strict=True):
            fpr, tpr, auroc = pooled_roc(scores, ax.get_title(), scorer, setting)
            np.testing.assert_allclose(curve.get_xdata(), fpr)
            np.testing.assert_allclose(curve.get_ydata(), tpr)
            assert text.get_text() == f"{scorer} {setting} ({100 * auroc:.1f})"
    assert fig.legends == []


def test_roc_figure_is_written_as_a_png(tmp_path):
    scores = read_score_files(write_score_files(tmp_path, categories=("bottle",), runs=1))
    roc_figure(scores, "mvtec_ad", tmp_path / "plots" / "roc_mvtec_ad.png")
    assert_png(tmp_path / "plots" / "roc_mvtec_ad.png")
    assert list((tmp_path / "plots").iterdir()) == [tmp_path / "plots" / "roc_mvtec_ad.png"]


def test_roc_figure_with_many_methods_has_one_legend_outside_the_panels(tmp_path, drawn):
    methods = [("winclip", s) for s in ("zs", "k1", "k2", "k4")] + [("anomalous_memory", "a1")]
    scores = read_score_files(write_score_files(tmp_path, categories=("bottle", "screw"), methods=methods, runs=1))
    fig = drawn(lambda: roc_figure(scores, "mvtec_ad", tmp_path / "roc.png"))
    assert all(ax.get_legend() is None for ax in fig.axes)
    (legend,) = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == [f"{s} {t}" for s, t in sorted(methods)]
    # the legend's colours are the curves' colours, method by method
    curves = [line for line in fig.axes[0].get_lines() if line.get_linestyle() != ":"]
    assert [h.get_color() for h in legend.legend_handles] == [c.get_color() for c in curves]


def test_auroc_bar_heights_are_the_mean_auroc_over_runs_and_the_error_bars_the_std(tmp_path, drawn):
    scores = read_score_files(write_score_files(tmp_path))
    metrics = metrics_of(scores)
    fig = drawn(lambda: auroc_bar_chart(metrics, "mvtec_ad", tmp_path / "bars.png"))
    (ax,) = fig.axes
    categories = ["bottle", "metal_nut", "screw"]
    assert [t.get_text() for t in ax.get_xticklabels()] == [*categories, "mean"]
    bars = [c for c in ax.containers if isinstance(c, BarContainer)]
    assert [b.get_label() for b in bars] == ["winclip k1", "winclip zs"]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["winclip k1", "winclip zs"] and fig.legends == []
    for container in bars:
        scorer, setting = container.get_label().split()
        # per run: sklearn AUROC (%) of each category, and their mean over categories
        per_run = np.array([
            [100 * roc_auc_score(g["label"], g["score"]) for _, g in scores[(scores["category"] == c) & (scores["scorer"] == scorer)
                                                                                & (scores["setting"] == setting)].groupby("run")]
            for c in categories
        ])  # (categories, runs)
        per_run = np.vstack([per_run, per_run.mean(axis=0)])
        np.testing.assert_allclose([bar.get_height() for bar in container.patches], per_run.mean(axis=1))
        segments = container.errorbar.lines[2][0].get_segments()
        np.testing.assert_allclose([(top[1] - bottom[1]) / 2 for bottom, top in segments], per_run.std(axis=1))


def test_auroc_bar_chart_is_written_as_a_png(tmp_path):
    metrics = metrics_of(read_score_files(write_score_files(tmp_path)))
    auroc_bar_chart(metrics, "mvtec_ad", tmp_path / "plots" / "auroc_mvtec_ad.png")
    assert_png(tmp_path / "plots" / "auroc_mvtec_ad.png")


def drawn_titles(fig) -> list[str]:
    """The figure title and axes titles of a drawn figure."""
    return [fig._suptitle.get_text() if fig._suptitle else ""] + [ax.get_title() for ax in fig.axes]


@pytest.mark.parametrize("weights, labelled", [(WEIGHTS, True), (PRETRAINED, False)])
def test_roc_figure_title_says_when_the_scores_used_random_weights(tmp_path, drawn, weights, labelled):
    scores = read_score_files(write_score_files(tmp_path, runs=1, weights=weights))
    titles = drawn_titles(drawn(lambda: roc_figure(scores, "mvtec_ad", tmp_path / "roc.png")))
    assert (RANDOM_WEIGHTS_NOTE in titles[0]) is labelled


@pytest.mark.parametrize("weights, labelled", [(WEIGHTS, True), (PRETRAINED, False)])
def test_auroc_bar_chart_title_says_when_the_metrics_used_random_weights(tmp_path, drawn, weights, labelled):
    metrics = metrics_of(read_score_files(write_score_files(tmp_path, runs=1, weights=weights)))
    titles = drawn_titles(drawn(lambda: auroc_bar_chart(metrics, "mvtec_ad", tmp_path / "bars.png")))
    assert any(RANDOM_WEIGHTS_NOTE in title for title in titles) is labelled
