"""A score job (fsad.scorers.run): results checked before anything is written, manifest fields joined by image id,
and a job killed with SIGKILL leaves no score file, while its rerun gives what an uninterrupted job gives."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import torch
import pytest
from PIL import Image

from fsad.backbones.loading import load_backbone
from fsad.data.manifest import manifest_row, write_manifest
from fsad.data.splits import Split
from fsad.features.extract import update_store
from fsad.features.store import FeatureStore
from fsad.io import write_json
from fsad.score_files import read_score_keys
from fsad.scorers.base import ScoreResult
from fsad.scorers.registry import get_method, method_params
from fsad.scorers.run import ScoreJob, _check_result, run_scorer, write_scores

TINY = {"arch": "fsad-tiny", "pretrained": "none", "image_size": 112}
MAP_SIZE = 16
TEST_IDS = ["widget-test-scratch-1", "widget-test-good-0", "widget-test-scratch-0", "widget-test-good-1"]  # not the manifest's order


@pytest.fixture(scope="module")
def job(tmp_path_factory) -> dict:
    """Inputs of one winclip k1 job on 4 test images (the store, split, manifest) and its run_scorer arguments, outputs aside."""
    root = tmp_path_factory.mktemp("score_job")
    rng = np.random.default_rng(0)
    rows = []
    for split, defect, stem in [("train", "good", "0"), ("test", "good", "0"), ("test", "good", "1"), ("test", "scratch", "0"), ("test", "scratch", "1")]:
        path = root / "images" / f"{split}_{defect}_{stem}.png"
        path.parent.mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (48, 56, 3), dtype=np.uint8)).save(path)
        rows.append(manifest_row("widget", split, defect, stem, path))
    write_manifest(pd.DataFrame(rows), root / "manifest.csv")
    write_json(root / "split.json", {"dataset": "toy", "category": "widget", "setting": "k1", "run": 0, "seed": 5,
                                     "normal_refs": ["widget-train-good-0"], "anomalous_refs": [], "validation": [], "test": TEST_IDS})
    update_store(FeatureStore(root / "features" / "widget.h5"), load_backbone(TINY, "cpu"), {r["image_id"]: r["image_path"] for r in rows}, [2, 3])
    arguments = dict(
        method_module="fsad.scorers.winclip.method", split_path=str(root / "split.json"), manifest_path=str(root / "manifest.csv"),
        features_store=str(root / "features" / "widget.h5"), text_cache_dir=str(root / "text"), backbone_spec=TINY,
        scorer_params=method_params(get_method("winclip"), {}), map_size=MAP_SIZE, weights_fallback="error", seed=0,
    )
    return {"root": root, "manifest": pd.DataFrame(rows), "arguments": arguments}


def outputs(directory: Path) -> dict[str, str]:
    return {"out_scores": str(directory / "run0.parquet"), "out_maps": str(directory / "run0.maps.h5"), "out_details": str(directory / "run0.json")}


def score(job: dict, directory: Path) -> dict:
    return run_scorer(ScoreJob("winclip", **job["arguments"], **outputs(directory)), "cpu")


def read_outputs(directory: Path) -> tuple[pd.DataFrame, np.ndarray, list[str], dict]:
    with h5py.File(directory / "run0.maps.h5") as h5:
        maps, ids = h5["maps"][:], [i.decode() for i in h5["image_ids"][:]]
    details = json.loads((directory / "run0.json").read_text())
    return pd.read_parquet(directory / "run0.parquet"), maps, ids, details


def test_the_score_file_joins_each_images_manifest_fields_by_its_id(job, tmp_path):
    score(job, tmp_path)
    scores, maps, map_ids, details = read_outputs(tmp_path)
    assert list(scores["image_id"]) == TEST_IDS and map_ids == TEST_IDS
    by_id = {row["image_id"]: row for row in job["manifest"].to_dict("records")}
    for row in scores.to_dict("records"):
        expected = by_id[row["image_id"]]
        assert (row["label"], row["defect_type"], row["image_path"]) == (expected["label"], expected["defect_type"], expected["image_path"])
    assert list(scores["label"]) == [1, 0, 1, 0] and set(scores["weights"]) == {"random"}
    assert maps.shape == (4, MAP_SIZE, MAP_SIZE)
    keys = read_score_keys(tmp_path / "run0.parquet")
    versions = keys.pop("environment")
    assert keys == {"scorer": "winclip", "method": "winclip", "dataset": "toy", "category": "widget", "setting": "k1", "run": 0, "weights": "random"}
    assert versions["torch"] == torch.__version__ and versions["numpy"] == np.__version__ and versions == details["environment"]
    assert details["n_test"] == 4 and details["scorer"] == "winclip"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run0.json", "run0.maps.h5", "run0.parquet"]


def test_a_missing_window_size_names_the_instance_that_asks_for_it_not_its_method(job, tmp_path):
    """The store holds window sizes [2, 3]; an instance named wide (method winclip) asking for 4 is named in the hint."""
    arguments = {**job["arguments"], "scorer_params": {**job["arguments"]["scorer_params"], "window_sizes": [2, 4]}}
    with pytest.raises(ValueError, match=r"^scorers\.wide asks for window sizes \[4\].*has \[2, 3\].*parameters of scorers\.wide "):
        run_scorer(ScoreJob("wide", **arguments, **outputs(tmp_path)), "cpu")
    assert not list(tmp_path.iterdir())


def test_write_scores_joins_by_id_whatever_the_row_orders_and_refuses_an_unknown_id(tmp_path):
    manifest = pd.DataFrame({"image_id": ["a", "b", "c"], "image_path": ["/a.png", "/b.png", "/c.png"], "label": [0, 1, 1],
                             "defect_type": ["good", "hole", "crack"]}).set_index("image_id", drop=False)
    keys = {"scorer": "s", "method": "m", "dataset": "d", "category": "c", "setting": "zs", "run": 0, "weights": "random"}
    result = ScoreResult(pd.DataFrame({"image_id": ["c", "a"], "score": [0.9, 0.1], "zero_shot": [0.8, 0.2]}), None)
    written = write_scores(result, manifest.iloc[::-1], keys, tmp_path / "s.parquet")
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "s.parquet"), written)
    assert written.to_dict("records") == [
        {"image_id": "c", "image_path": "/c.png", "label": 1, "defect_type": "crack", "score": 0.9, "zero_shot": 0.8, "weights": "random"},
        {"image_id": "a", "image_path": "/a.png", "label": 0, "defect_type": "good", "score": 0.1, "zero_shot": 0.2, "weights": "random"},
    ]
    with pytest.raises(KeyError, match="'z'"):
        write_scores(ScoreResult(pd.DataFrame({"image_id": ["a", "z"], "score": [0.1, 0.2]}), None), manifest, keys, tmp_path / "t.parquet")
    assert not (tmp_path / "t.parquet").exists()


SPLIT = Split("d", "widget", "k1", 0, 0, ["r"], [], [], ["a", "b"])


def result_of(ids=("a", "b"), maps_shape=(2, 8, 8), **columns) -> ScoreResult:
    frame = pd.DataFrame({"image_id": list(ids), "score": np.zeros(len(ids)), **columns})
    return ScoreResult(frame, None if maps_shape is None else np.zeros(maps_shape, dtype=np.float32))


@pytest.mark.parametrize(
    "result, maps, message",
    [
        (result_of(maps_shape=None), True, "returned no anomaly maps, but its method declares maps=True"),
        (result_of(), False, "returned anomaly maps, but its method declares maps=False"),
        (result_of(ids=("b", "a")), True, "other images than the split's test list"),
        (result_of(ids=("a",), maps_shape=(1, 8, 8)), True, "other images than the split's test list"),
        (ScoreResult(pd.DataFrame({"image_id": ["a", "b"], "zero_shot": [0.1, 0.2]}), np.zeros((2, 8, 8))), True, "no 'score' column"),
        (result_of(maps_shape=(2, 4, 4)), True, r"maps of shape \(2, 4, 4\), expected \(2, 8, 8\)"),
        (result_of(label=[0, 1]), True, r"column\(s\) \['label'\], which the score file fills in itself"),
    ],
    ids=["maps missing", "maps undeclared", "test order", "test image missing", "no score", "map size", "manifest column"],
)
def test_a_result_that_breaks_the_contract_stops_the_job_with_the_reason(result, maps, message):
    with pytest.raises(RuntimeError, match=message):
        _check_result(result, SPLIT, 8, "toy", maps)


def test_a_result_that_keeps_the_contract_passes():
    _check_result(result_of(), SPLIT, 8, "toy", True)
    _check_result(result_of(maps_shape=None), SPLIT, 8, "toy", False)


# Runs a score job that stops at a kill point (says so through the marker file) and waits there to be killed.
SCORE_UNTIL_KILLED = """
import contextlib, json, sys, time
from fsad.scorers import run
from fsad.scorers.winclip import scorer

marker, point, arguments = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])

def wait_to_be_killed():
    open(marker, "w").close()
    time.sleep(600)

if point == "scoring":
    real_scores = scorer.winclip_scores
    def scores_then_wait(*args, **kwargs):
        real_scores(*args, **kwargs)
        wait_to_be_killed()
    scorer.winclip_scores = scores_then_wait
else:  # the file at `point` is written in full beside its target, and not yet renamed onto it
    real_atomic_path = run.atomic_path
    @contextlib.contextmanager
    def written_then_wait(target, *args, **kwargs):
        with real_atomic_path(target, *args, **kwargs) as tmp:
            yield tmp
            if str(target) == arguments[point]:
                wait_to_be_killed()
    run.atomic_path = written_then_wait
    import fsad.score_files
    fsad.score_files.atomic_path = written_then_wait
run.run_scorer(run.ScoreJob("winclip", **arguments), "cpu")
"""


def kill_score_job(job: dict, directory: Path, point: str) -> None:
    marker = directory.parent / f"{directory.name}.reached"
    arguments = {**job["arguments"], **outputs(directory)}
    process = subprocess.Popen([sys.executable, "-c", SCORE_UNTIL_KILLED, str(marker), point, json.dumps(arguments)])
    try:
        deadline = time.monotonic() + 120
        while not marker.exists():
            assert process.poll() is None, "the score job ended before it could be killed"
            assert time.monotonic() < deadline, f"the score job never reached {point}"
            time.sleep(0.05)
        os.kill(process.pid, signal.SIGKILL)
        process.wait(10)
    finally:
        process.kill()
        process.wait()


@pytest.fixture(scope="module")
def uninterrupted(job, tmp_path_factory) -> tuple[pd.DataFrame, np.ndarray, list[str], dict]:
    directory = tmp_path_factory.mktemp("uninterrupted")
    score(job, directory)
    return read_outputs(directory)


@pytest.mark.slow  # a fresh Python with torch per kill: seconds each
@pytest.mark.parametrize("point", ["scoring", "out_maps", "out_scores"])
def test_a_sigkilled_score_job_leaves_no_score_file_and_its_rerun_equals_an_uninterrupted_job(job, uninterrupted, tmp_path, point):
    killed = tmp_path / "killed"
    kill_score_job(job, killed, point)
    assert not Path(outputs(killed)["out_scores"]).exists()
    left = sorted(p.name for p in killed.iterdir()) if killed.exists() else []
    if point == "scoring":
        assert left == []
    else:  # the temporary copy of the file being written, and the files written before it (the scores go last)
        written_before = {"out_maps": [], "out_scores": ["run0.json", "run0.maps.h5"]}[point]
        target = Path(outputs(killed)[point]).name
        assert [name for name in left if not name.startswith(f".{target}.")] == written_before
        assert len(left) == len(written_before) + 1

    score(job, killed)
    assert sorted(p.name for p in killed.iterdir()) == ["run0.json", "run0.maps.h5", "run0.parquet"]  # temporaries removed
    rerun, expected = read_outputs(killed), uninterrupted
    pd.testing.assert_frame_equal(rerun[0], expected[0])
    assert np.array_equal(rerun[1], expected[1]) and rerun[2] == expected[2]
    timing = ("seconds", "images_per_second")
    assert {k: v for k, v in rerun[3].items() if k not in timing} == {k: v for k, v in expected[3].items() if k not in timing}


# A score job of warm caches, as a fresh process: which heavy packages did it import by the end?
SCORE_AND_LIST_IMPORTS = """
import json, sys
from fsad.scorers.run import ScoreJob, run_scorer
arguments, outputs = json.loads(sys.argv[1]), json.loads(sys.argv[2])
run_scorer(ScoreJob("winclip", **arguments, **outputs), "cpu")
print(json.dumps(sorted(name for name in ("open_clip", "timm", "transformers", "sklearn", "diffusers") if name in sys.modules)))
"""


def test_a_score_job_with_warm_caches_never_imports_model_code(job, tmp_path):
    """No model construction, so none of the packages that build models (seconds of start-up each) is imported."""
    score(job, tmp_path / "warm-up")  # fills the prompt-embedding cache
    proc = subprocess.run(
        [sys.executable, "-c", SCORE_AND_LIST_IMPORTS, json.dumps(job["arguments"]), json.dumps(outputs(tmp_path / "job"))],
        capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.splitlines()[-1]) == []
    pd.testing.assert_frame_equal(read_outputs(tmp_path / "job")[0], read_outputs(tmp_path / "warm-up")[0])
