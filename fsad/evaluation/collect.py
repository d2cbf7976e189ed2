"""Evaluate one score file into long-format metric rows, and write or gather ``metrics.csv`` tables."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

from fsad.data.manifest import read_manifest
from fsad.data.images import load_masks
from fsad.evaluation.metrics import evaluate_scores
from fsad.io import atomic_path
from fsad.provenance import environment_line
from fsad.score_files import read_score_keys

log = logging.getLogger(__name__)

# environment: the software versions of the score file (fsad.provenance.environment_line).
METRICS_COLUMNS = ["dataset", "category", "setting", "run", "scorer", "metric", "value", "weights", "environment"]


def read_score_files(paths: list[str | Path]) -> pd.DataFrame:
    """Concatenate score parquets, adding the keys each carries (``scorer, method, dataset, category, setting, run``)."""
    frames = []
    for path in paths:
        keys = read_score_keys(path)
        frame = pd.read_parquet(path)
        for key in ("scorer", "method", "dataset", "category", "setting", "run"):
            frame[key] = keys[key]
        frames.append(frame)
    if not frames:
        raise ValueError("no score files given")
    return pd.concat(frames, ignore_index=True)


def read_maps(maps_h5: str | Path, image_ids: Sequence[str], map_size: int) -> np.ndarray | None:
    """``(N, S, S)`` float32 maps of ``image_ids`` in that order, or ``None`` when the scorer wrote none."""
    with h5py.File(maps_h5, "r") as h5:
        if "maps" not in h5:
            return None
        stored_ids = [name.decode() if isinstance(name, bytes) else str(name) for name in h5["image_ids"][()]]
        maps = h5["maps"][()]
    if maps.shape[1:] != (map_size, map_size):
        raise ValueError(f"{maps_h5}: maps of shape {maps.shape}, expected side {map_size}; rerun the scores job with the current evaluation.map_size")
    position = {image_id: index for index, image_id in enumerate(stored_ids)}
    missing = [image_id for image_id in image_ids if image_id not in position]
    if missing:
        raise ValueError(f"{maps_h5}: no maps for {len(missing)} scored image(s), e.g. {missing[0]!r}; rerun the scores job")
    return maps[[position[image_id] for image_id in image_ids]].astype(np.float32)


def evaluate_run(
    scores_parquet: str | Path,
    maps_h5: str | Path | None,
    map_size: int,
    fpr_limit: float,
    manifest_path: str | Path | None = None,
    num_thresholds: int | None = None,
) -> list[dict]:
    """Metrics of one score file as long-format rows (``METRICS_COLUMNS``).

    Pixel metrics need the maps file with maps in it and the dataset manifest (for the mask paths); they are left
    out when the scorer wrote no maps or when some anomalous test image has no mask.
    """
    scores = pd.read_parquet(scores_parquet)
    keys = read_score_keys(scores_parquet)
    maps = read_maps(maps_h5, list(scores["image_id"]), map_size) if maps_h5 is not None else None
    masks = None
    if maps is not None:
        if manifest_path is None:
            raise ValueError(f"{maps_h5}: pixel metrics need the dataset manifest for the mask paths; pass manifest_path")
        manifest = read_manifest(manifest_path).set_index("image_id")
        unknown = set(scores["image_id"]) - set(manifest.index)
        if unknown:
            raise ValueError(f"{scores_parquet}: {len(unknown)} image id(s) not in {manifest_path}; rerun the scores job")
        masks = load_masks(manifest.loc[scores["image_id"], "mask_path"].tolist(), scores["label"].tolist(), map_size)
    try:
        values = evaluate_scores(scores, maps, masks, fpr_limit, num_thresholds)
    except ValueError as err:
        raise ValueError(f"{scores_parquet}: {err}") from err
    row = {key: keys[key] for key in ("dataset", "category", "setting", "run", "scorer", "weights")}
    if "environment" not in keys:
        raise ValueError(f"{scores_parquet}: records no software versions (written before score files did); rerun its score job")
    row["environment"] = environment_line(keys["environment"])
    return [{**row, "metric": metric, "value": value} for metric, value in values.items()]


def write_metrics(rows: Iterable[dict] | pd.DataFrame, path: str | Path) -> pd.DataFrame:
    """Write metric rows as CSV (columns ``METRICS_COLUMNS``) atomically; returns the written frame."""
    frame = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows), columns=METRICS_COLUMNS)
    missing = set(METRICS_COLUMNS) - set(frame.columns)
    if missing:
        raise ValueError(f"metric rows for {path} lack column(s) {sorted(missing)}")
    frame = frame[METRICS_COLUMNS]
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)
    return frame


def read_metrics(path: str | Path) -> pd.DataFrame:
    """Read a ``metrics.csv`` (or a per-run part), checking its columns."""
    frame = pd.read_csv(path, dtype={"dataset": str, "category": str, "setting": str, "scorer": str, "metric": str, "weights": str, "environment": str})
    missing = set(METRICS_COLUMNS) - set(frame.columns)
    if missing:
        raise ValueError(f"{path}: not a metrics table, lacks column(s) {sorted(missing)}; rerun the evaluate jobs")
    return frame


def combine_metrics(part_paths: Sequence[str | Path], path: str | Path) -> pd.DataFrame:
    """Concatenate per-run metric parts into one ``metrics.csv``, sorted by its key columns."""
    if not part_paths:
        raise ValueError(f"{path}: no metric parts to combine; enable at least one scorer")
    frame = pd.concat([read_metrics(part) for part in part_paths], ignore_index=True)
    frame = frame.sort_values(["dataset", "category", "scorer", "setting", "run", "metric"], kind="stable")
    return write_metrics(frame.reset_index(drop=True), path)
