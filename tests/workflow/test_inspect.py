"""Inspect on the tiny config: a saved WinCLIP+ setup scores a demonstration folder (its own test images and a file that
is not an image) and a folder of the user's; scores, thresholds, percentiles and colour scale are recomputed here from
the run's saved files, and a rerun after one added image encodes only that image."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import time
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

from fsad.features.store import FeatureStore

from .conftest import ROOT, snakemake, write_config

pytestmark = pytest.mark.slow
FPR = 0.2
SETUP = {"scorer": "winclip", "dataset": "synthetic", "category": "textile", "setting": "k1"}


def _config(workdir: Path, **inspections: dict) -> Path:
    return write_config(workdir / "config.yaml", {"inspect": {name: {**SETUP, **entry} for name, entry in inspections.items()}})


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("inspect")
    config = _config(workdir, demo={"images": {"demo": 4}, "decision": "test_normals", "fpr": FPR})
    snakemake(workdir, "--cores", "2", "inspect", configfiles=(config,))
    results = workdir / "results"
    return workdir, results / "inspect" / "demo", results / "scores" / "winclip" / "synthetic" / "textile" / "k1"


def _demo_name(image_path: str, label: int) -> str:
    return f"{'anomalous' if label == 1 else 'normal'}_{Path(image_path).parent.name}_{Path(image_path).name}"


def test_demo_images_score_as_in_the_run_and_decide_by_the_test_normals_at_the_fpr(demo):
    _, out, saved_dir = demo
    saved = pd.read_parquet(saved_dir / "run0.parquet")
    saved_by_name = {_demo_name(p, label): s for p, label, s in zip(saved["image_path"], saved["label"], saved["score"])}
    scores = pd.read_csv(out / "scores.csv")
    assert len(scores) == 4 and set(scores["decision"]) <= {"normal", "anomalous"}
    for row in scores.itertuples():
        assert row.score == pytest.approx(saved_by_name[Path(row.file).name], rel=1e-4)
    normals = np.sort(saved.loc[saved["label"] == 0, "score"].to_numpy())
    by_hand = normals[math.ceil(len(normals) * (1 - FPR)) - 1]  # at most FPR of the normals strictly above it
    thresholds = pd.read_csv(out / "thresholds.csv").set_index("option")
    assert thresholds.loc["test_normals", "threshold"] == pytest.approx(by_hand)
    assert thresholds.loc["test_normals", "n_scores"] == len(normals)
    assert bool(thresholds.loc["test_normals", "decides"]) and bool(thresholds.loc["test_normals", "percentile_of"])
    # k1 holds one validation normal: at any FPR below 1 its threshold is that image's own score
    assert thresholds.loc["validation_normals", "n_scores"] == 1 and np.isfinite(thresholds.loc["validation_normals", "threshold"])
    assert all(isinstance(c, str) and c for c in thresholds["caveat"])
    assert list(scores["decision"]) == ["anomalous" if s > by_hand else "normal" for s in scores["score"]]
    assert list(scores["normal_percentile"]) == pytest.approx([float(np.mean(normals < s)) for s in scores["score"]])
    # the F1-max option, by brute force over the saved test scores (anomalous when score >= t)
    labels, values = saved["label"].to_numpy(), saved["score"].to_numpy()
    f1 = {t: 2 * ((values >= t) & (labels == 1)).sum() / ((values >= t).sum() + (labels == 1).sum()) for t in np.unique(values)}
    best = max(f1.values())
    assert thresholds.loc["test_f1_max", "threshold"] == pytest.approx(min(t for t, v in f1.items() if v == best))


def test_the_file_that_is_no_image_is_listed_with_its_reason_and_not_scored(demo):
    _, out, _ = demo
    unreadable = pd.read_csv(out / "unreadable.csv")
    assert [Path(f).name for f in unreadable["file"]] == ["not_an_image.png"]
    assert "corrupt or unreadable image" in unreadable["reason"][0]
    assert "not_an_image.png" not in " ".join(pd.read_csv(out / "scores.csv")["file"])


def test_overlays_share_the_run_maps_colour_scale_and_the_gallery_shows_the_worst_first(demo):
    _, out, saved_dir = demo
    with h5py.File(saved_dir / "run0.maps.h5") as h5:
        maps = h5["maps"][()].astype(np.float32)
    info = json.loads((out / "summary.json").read_text())
    assert info["colour_scale"]["low"] == pytest.approx(float(maps.min())) and info["colour_scale"]["high"] == pytest.approx(float(maps.max()))
    assert info["rescore_max_difference"] <= 1e-3 and len(info["rescored_test_images"]) == 4
    scores = pd.read_csv(out / "scores.csv")
    assert sorted(p.name for p in (out / "overlays").glob("*.png")) == sorted(f"{i}.png" for i in scores["image_id"])
    page = (out / "gallery.html").read_text()
    shown = re.findall(r"<h3>([^<]+)</h3>", page)
    assert shown == [Path(f).name for f in scores.sort_values("score", ascending=False)["file"]]
    assert page.count('alt="overlay"') == 4 and "not_an_image.png" in page


def test_a_rerun_with_one_added_image_encodes_only_that_image(demo):
    workdir, out, _ = demo
    folder = workdir / "my_parts"
    folder.mkdir()
    demo_files = sorted(p for p in (out / "images").glob("*.png") if p.name != "not_an_image.png")
    for path in demo_files[:2]:
        shutil.copyfile(path, folder / path.name)
    (folder / "empty.png").write_bytes(b"")
    config = _config(workdir, demo={"images": {"demo": 4}, "decision": "test_normals", "fpr": FPR}, mine={"images": str(folder), "decision": "test_f1_max"})
    snakemake(workdir, "--cores", "2", "inspect", configfiles=(config,))
    store_dir = next((workdir / "results" / "cache" / "features").glob("*/inspect"))
    first = json.loads((store_dir / "mine.json").read_text())
    assert first["summary"]["encoded"] == 2 and [Path(r["file"]).name for r in first["unreadable"]] == ["empty.png"]
    before = pd.read_csv(workdir / "results" / "inspect" / "mine" / "scores.csv").set_index("image_id")["score"]

    time.sleep(0.05)
    shutil.copyfile(demo_files[2], folder / demo_files[2].name)
    proc = snakemake(workdir, "--cores", "2", "inspect", configfiles=(config,))
    ran = set(re.findall(r"^(?:local)?rule (\w+):$", proc.stdout + proc.stderr, flags=re.MULTILINE))
    assert ran == {"inspect_features", "inspect_score", "inspect"}  # the other inspection and the run itself are done
    second = json.loads((store_dir / "mine.json").read_text())
    assert second["summary"]["images"] == 3 and second["summary"]["encoded"] == 1
    store = FeatureStore(store_dir / "mine.h5")
    after = pd.read_csv(workdir / "results" / "inspect" / "mine" / "scores.csv").set_index("image_id")["score"]
    assert store.image_ids() == sorted(after.index) and len(after) == 3
    assert len(store.shard_paths()) == 2  # the first run's shard (two images) and one new shard with the added image
    assert after[before.index].to_numpy() == pytest.approx(before.to_numpy())


def _f1_max_threshold(values: np.ndarray, labels: np.ndarray) -> float:
    """The lowest threshold of the best F1 (anomalous when score >= t), by brute force over the scores."""
    f1 = {t: 2 * ((values >= t) & (labels == 1)).sum() / ((values >= t).sum() + (labels == 1).sum()) for t in np.unique(values)}
    best = max(f1.values())
    return min(t for t, v in f1.items() if v == best)


# Two more kinds of setup: the anomalous memory (validation normals, weights validated per job, a method that reads
# test labels for its oracle row) and a toy plugin method with a run-scope fit and no maps.
MORE = {
    "am": {"scorer": "anomalous_memory", "dataset": "synthetic", "category": "textile", "setting": "a1", "images": {"demo": 3},
           "decision": "validation_normals", "fpr": 0.05},
    "toy": {"scorer": "toy", "dataset": "textile", "category": "textile", "setting": "k1", "images": {"demo": 3}, "decision": "test_f1_max"},
}


@pytest.fixture(scope="module")
def more(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("inspect_more")
    config = write_config(workdir / "config.yaml", {
        "plugins": ["toy_mean"],
        "scorers": {"toy": {"method": "toy_mean", "backbone": "vitb16plus", "settings": ["k1"], "datasets": ["textile"], "epochs": 2}},
        "inspect": MORE,
    })
    path = os.pathsep.join(filter(None, [str(ROOT / "tests" / "plugins"), os.environ.get("PYTHONPATH")]))
    snakemake(workdir, "--cores", "2", "inspect", configfiles=(config,), env={"PYTHONPATH": path})
    return workdir / "results"


@pytest.mark.parametrize("name", sorted(MORE))
def test_other_methods_score_their_runs_test_images_as_the_run_did(more, name):
    entry = MORE[name]
    saved = pd.read_parquet(more / "scores" / entry["scorer"] / entry["dataset"] / entry["category"] / entry["setting"] / "run0.parquet")
    saved_by_name = {_demo_name(p, label): s for p, label, s in zip(saved["image_path"], saved["label"], saved["score"])}
    out = more / "inspect" / name
    scores = pd.read_csv(out / "scores.csv")
    assert len(scores) == 3
    for row in scores.itertuples():
        assert row.score == pytest.approx(saved_by_name[Path(row.file).name], rel=1e-4)
    thresholds = pd.read_csv(out / "thresholds.csv").set_index("option")
    chosen = thresholds.loc[entry["decision"], "threshold"]
    strict = entry["decision"] != "test_f1_max"
    assert list(scores["decision"]) == ["anomalous" if (s > chosen if strict else s >= chosen) else "normal" for s in scores["score"]]
    assert thresholds.loc["test_f1_max", "threshold"] == pytest.approx(_f1_max_threshold(saved["score"].to_numpy(), saved["label"].to_numpy()))
    assert [Path(f).name for f in pd.read_csv(out / "unreadable.csv")["file"]] == ["not_an_image.png"]


def test_the_anomalous_memory_decides_by_its_one_validation_normal(more):
    thresholds = pd.read_csv(more / "inspect" / "am" / "thresholds.csv").set_index("option")
    assert thresholds.loc["validation_normals", "n_scores"] == 1 and bool(thresholds.loc["validation_normals", "decides"])
    assert np.isnan(thresholds.loc["reference_normals", "threshold"])  # a1 has no normal references
    scores = pd.read_csv(more / "inspect" / "am" / "scores.csv")
    # one validation normal: each image is at percentile 0 (below it or equal) or 1 (above it)
    assert list(scores["normal_percentile"]) == [float(s > thresholds.loc["validation_normals", "threshold"]) for s in scores["score"]]


def test_a_method_without_maps_gets_a_gallery_without_overlays(more):
    out = more / "inspect" / "toy"
    assert not list((out / "overlays").glob("*.png"))
    page = (out / "gallery.html").read_text()
    assert page.count("no map (this method gives image scores only)") == 3 and 'alt="overlay"' not in page
    assert json.loads((out / "summary.json").read_text())["colour_scale"] is None
