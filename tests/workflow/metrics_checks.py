"""What a finished run's metrics.csv must hold, derived from its score files, maps and manifests (not from the evaluation code)."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import pandas as pd
import pyarrow.parquet as pq

KEYS = ["scorer", "dataset", "category", "setting", "run"]
IMAGE_METRICS = {"image_auroc", "image_ap", "image_f1max"}
PIXEL_METRICS = {"pixel_auroc", "pixel_pro"}


def expected_metrics(score_file: Path, manifest: pd.DataFrame) -> set[str]:
    """The image metrics, one ``image_auroc:<column>`` per sub-score column (numeric, besides ``label`` and ``score``), and
    the pixel metrics when the job wrote maps and every anomalous test image has a mask."""
    scores = pd.read_parquet(score_file)
    sub_scores = [c for c in scores.columns if c not in ("label", "score") and scores[c].dtype.kind in "fiu"]
    metrics = IMAGE_METRICS | {f"image_auroc:{c}" for c in sub_scores}
    with h5py.File(score_file.with_suffix(".maps.h5")) as h5:
        has_maps = "maps" in h5
    masks = manifest.set_index("image_id").loc[scores.loc[scores["label"] == 1, "image_id"], "mask_path"]
    return metrics | PIXEL_METRICS if has_maps and (masks != "").all() else metrics


def assert_metrics_cover_every_job(results: Path) -> pd.DataFrame:
    """metrics.csv has, for each score job (one score file each), exactly its metrics once, all in [0, 1]; returns it."""
    text_columns = {column: str for column in ("dataset", "category", "setting", "scorer", "metric", "weights")}
    metrics = pd.read_csv(results / "metrics" / "metrics.csv", dtype=text_columns)
    score_files = sorted(p for p in (results / "scores").rglob("run*.parquet") if not p.name.startswith("."))
    assert score_files, f"no score files under {results / 'scores'}"
    manifests = {}
    expected_rows = []
    for path in score_files:
        keys = json.loads(pq.read_schema(path).metadata[b"fsad"])
        manifest = manifests.setdefault(keys["dataset"], pd.read_csv(results / "data" / keys["dataset"] / "manifest.csv", dtype=str, keep_default_na=False))
        expected_rows += [(*(keys[k] for k in KEYS), metric) for metric in expected_metrics(path, manifest)]
    assert len(metrics) == len(expected_rows), f"{len(metrics)} metric rows, expected {len(expected_rows)} ({len(score_files)} jobs)"
    actual = sorted(metrics[[*KEYS, "metric"]].itertuples(index=False, name=None))
    assert actual == sorted(expected_rows)
    missing = metrics[metrics["value"].isna()]
    assert missing.empty, f"NaN metrics:\n{missing.to_string()}"
    outside = metrics[(metrics["value"] < 0) | (metrics["value"] > 1)]
    assert outside.empty, f"metrics outside [0, 1]:\n{outside.to_string()}"
    assert (metrics["metric"].isin(PIXEL_METRICS)).any(), "no job of the run has pixel metrics"
    return metrics
