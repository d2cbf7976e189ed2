"""Published splits never change silently: a fixed manifest and seed must give the stored pool and split JSONs.

The golden files under ``tests/unit/golden/splits/`` were written once by ``python -m tests.unit.test_splits_golden``
and checked by eye (disjoint references across runs, validation apart from the run's references, test set
apart from both pools). Regenerate them only for an intended protocol change, and say so in the commit.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from fsad.data.splits import draw_pool, draw_split

GOLDEN = Path(__file__).parent / "golden" / "splits"
POOL_ARGS = {"dataset": "toy", "category": "widget", "seed": 7, "max_test": 8, "normal_pool": 8, "anomalous_pool": 4}
SETTINGS = [
    {"name": "k2", "normal_shots": 2, "anomalous_shots": 0, "validation_normals": 0},
    {"name": "a1", "normal_shots": 0, "anomalous_shots": 1, "validation_normals": 2},
    {"name": "k1a1", "normal_shots": 1, "anomalous_shots": 1, "validation_normals": 1},
]
RUNS = range(3)


def golden_manifest() -> pd.DataFrame:
    """10 training normals, 1 masked and 1 unmasked training anomaly, 9 test normals, 4 masked and 2 unmasked test anomalies."""
    rows = [(f"widget-train-good-{i}", "train", 0, "good", "") for i in range(10)]
    rows += [("widget-train-crack-0", "train", 1, "crack", "/m/train-crack-0.png"), ("widget-train-crack-1", "train", 1, "crack", "")]
    rows += [(f"widget-test-good-{i}", "test", 0, "good", "") for i in range(9)]
    rows += [(f"widget-test-hole-{i}", "test", 1, "hole", f"/m/test-hole-{i}.png") for i in range(4)]
    rows += [(f"widget-test-stain-{i}", "test", 1, "stain", "") for i in range(2)]
    frame = pd.DataFrame(rows, columns=["image_id", "split", "label", "defect_type", "mask_path"])
    return frame.assign(category="widget", image_path="/i/" + frame["image_id"] + ".png")


def pool_and_splits() -> tuple[dict, dict[str, dict]]:
    """The pool and every (setting, run) split, keyed ``{setting}/run{run}``."""
    pool = draw_pool(golden_manifest(), **POOL_ARGS)
    return pool, {f"{s['name']}/run{run}": draw_split(pool, s, run) for s in SETTINGS for run in RUNS}


def test_pool_matches_the_golden_file():
    pool, _ = pool_and_splits()
    assert pool == json.loads((GOLDEN / "pool.json").read_text())


@pytest.mark.parametrize("key", [f"{s['name']}/run{run}" for s in SETTINGS for run in RUNS])
def test_split_matches_the_golden_file(key):
    _, splits = pool_and_splits()
    assert splits[key] == json.loads((GOLDEN / f"{key}.json").read_text())


def write_golden() -> None:
    pool, splits = pool_and_splits()
    for name, data in {"pool": pool, **splits}.items():
        path = GOLDEN / f"{name}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data, indent=1) + "\n")


if __name__ == "__main__":
    write_golden()
