"""Anomalous-samples tables and defect-size figure, from hand-made score files, details and metrics."""

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from fsad.evaluation.collect import read_score_files
from fsad.evaluation.anomalous_tables import (
    defect_size_figure,
    defect_sizes,
    format_mean_std,
    one_sample_table,
    sub_score_table_test_set,
    sub_score_table_validation_set,
    weight_validation_table,
    write_table,
)

LABELS = [0, 0, 1, 1]


def write_scores(root, category, run, perfect):
    """Four test images; ``zero_shot`` separates them, ``anomalous_patch`` inverts them."""
    path = root / "anomalous_memory" / "visa" / category / "a1" / f"run{run}.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    good = np.array([0.1, 0.2, 0.8, 0.9])
    frame = pd.DataFrame({
        "image_id": [f"{category}{i}" for i in range(4)], "label": LABELS,
        "zero_shot": good, "anomalous_patch": good[::-1],
        "score_baseline": good if perfect else good[::-1], "score_uniform": good,
    })
    frame.to_parquet(path)
    return path


def details(category, run, oracle=1.0):
    return {
        "dataset": "visa", "category": category, "setting": "a1", "run": run,
        "scorer_details": {"validation": {
            "sub_scores": ["zero_shot", "anomalous_patch"],
            "validation_sub_score_auroc": {"zero_shot": 0.5, "anomalous_patch": 1.0},
            "distributions": {"uniform": {"oracle_test_auroc": oracle, "test_auroc_per_draw": [0.6, 0.8]}},
        }},
    }


@pytest.fixture
def scores(tmp_path):
    paths = [write_scores(tmp_path, c, r, perfect=(r == 0)) for c in ("pcb1", "pcb2") for r in (0, 1)]
    return read_score_files(paths)


def test_score_files_get_their_keys_from_the_path(scores):
    assert set(scores["category"]) == {"pcb1", "pcb2"} and set(scores["run"]) == {0, 1}
    assert set(scores["scorer"]) == {"anomalous_memory"} and set(scores["setting"]) == {"a1"}
    with pytest.raises(ValueError, match="not a scores file path"):
        read_score_files(["somewhere/else.parquet"])


def test_sub_score_aurocs_on_the_test_set_per_category(scores):
    table = sub_score_table_test_set(scores, ["zero_shot", "anomalous_patch"])
    assert list(table.columns) == ["dataset", "category", "zero_shot", "anomalous_patch"]
    assert list(table["zero_shot"]) == ["100.00 ± 0.00"] * 2
    assert list(table["anomalous_patch"]) == ["0.00 ± 0.00"] * 2


def test_sub_score_aurocs_on_the_validation_set_come_from_the_details():
    table = sub_score_table_validation_set([details("pcb1", 0), details("pcb1", 1)])
    assert table.loc[0, "anomalous_patch"] == "100.00 ± 0.00" and table.loc[0, "zero_shot"] == "50.00 ± 0.00"


def test_weight_validation_table_rows_and_run_statistics(scores):
    entries = [details(c, r, oracle=0.9 + 0.1 * r) for c in ("pcb1", "pcb2") for r in (0, 1)]
    table = weight_validation_table(scores, entries).set_index("weights")["visa"]
    assert table["Baseline weights"] == "50.00 ± 50.00"  # 100 in run 0, 0 in run 1
    assert table["Random uniform weights (one draw)"] == "70.00 ± 10.00"
    assert table["Oracle: Monte-Carlo on test set (uniform)"] == "95.00 ± 5.00"
    assert table["Monte-Carlo on validation set (uniform)"] == "100.00 ± 0.00"


def test_one_sample_table_compares_both_pairs_with_a_dataset_mean():
    rows = []
    for run, (normal, anomalous) in enumerate([(0.5, 0.9), (0.7, 0.9)]):
        for scorer, setting, value in [("winclip", "k1", normal), ("anomalous_memory", "a1", anomalous)]:
            rows += [{"dataset": "visa", "category": c, "setting": setting, "run": run, "scorer": scorer,
                      "metric": "image_auroc", "value": value} for c in ("pcb1", "pcb2")]
    table = one_sample_table(pd.DataFrame(rows)).set_index(["dataset", "category"])
    assert table.loc[("visa", "mean"), "WinCLIP+ (1 normal)"] == "60.00 ± 10.00"
    assert table.loc[("visa", "pcb1"), "ours (1 anomalous)"] == "90.00 ± 0.00"
    with pytest.raises(ValueError, match="run its evaluation first"):
        one_sample_table(pd.DataFrame(rows), metric="pixel_auroc")


def test_tables_are_written_as_markdown_csv_and_latex(tmp_path, scores):
    paths = write_table(sub_score_table_test_set(scores, ["zero_shot"]), tmp_path / "tables" / "sub", "Sub-scores")
    assert sorted(p.suffix for p in paths) == [".csv", ".md", ".tex"]
    assert "Sub-scores" in (tmp_path / "tables" / "sub.md").read_text()
    assert format_mean_std(float("nan")) == "n/a" and format_mean_std(81.644) == "81.64"


def test_defect_sizes_are_mask_areas_and_the_figure_is_written(tmp_path):
    mask = np.zeros((10, 20), dtype=np.uint8)
    mask[:5, :4] = 255
    Image.fromarray(mask).save(tmp_path / "m.png")
    manifest = pd.DataFrame({
        "category": ["a", "a", "b"], "image_id": ["x", "y", "z"], "label": [1, 0, 1],
        "defect_type": ["scratch", "good", "hole"], "mask_path": [str(tmp_path / "m.png"), "", str(tmp_path / "m.png")],
    })
    sizes = defect_sizes(manifest)
    assert list(sizes["image_id"]) == ["x", "z"] and np.allclose(sizes["relative_size"], 0.1)
    figure = defect_size_figure(sizes, tmp_path / "plots" / "defect_sizes.png")
    assert figure.stat().st_size > 0
