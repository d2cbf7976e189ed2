"""Anomaly-map galleries: query, map overlay and ground truth for the best and worst images of a category.

A gallery of a score file computed with random (fallback) weights says so under its title.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from fsad.evaluation.tables import with_weights_note
from fsad.io import save_figure


def pick_examples(scores: pd.DataFrame, n: int = 2) -> pd.DataFrame:
    """The images a reader should look at, with a ``verdict`` column.

    ``best``: the highest-scored anomalies and the lowest-scored normals (what the scorer gets right
    most clearly); ``worst``: the lowest-scored anomalies and the highest-scored normals (its mistakes).
    """
    anomalous = scores[scores["label"] == 1].sort_values("score", ascending=False)
    normal = scores[scores["label"] == 0].sort_values("score", ascending=True)
    parts = [
        anomalous.head(n).assign(verdict="best"),
        normal.head(n).assign(verdict="best"),
        anomalous.tail(n).iloc[::-1].assign(verdict="worst"),
        normal.tail(n).iloc[::-1].assign(verdict="worst"),
    ]
    picked = pd.concat(parts)
    return picked[~picked.duplicated("image_id")].reset_index(drop=True)


def _square(path: str, size: int, mode: str) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img.convert(mode).resize((size, size), Image.Resampling.BILINEAR))


def gallery_figure(
    examples: pd.DataFrame, maps: dict[str, np.ndarray], mask_paths: dict[str, str], path: str | Path, title: str
) -> Path:
    """One row per example: the query, the anomaly map over it, the ground-truth mask (or 'no mask').

    Args:
        examples: :func:`pick_examples` rows (``image_id, image_path, label, score, verdict``).
        maps: image id -> ``(S, S)`` anomaly map.
        mask_paths: image id -> mask file ('' when the image has none).
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    all_maps = np.stack([maps[i] for i in examples["image_id"]]).astype(np.float32)
    low, high = float(all_maps.min()), float(all_maps.max())
    figure, axes = plt.subplots(len(examples), 3, figsize=(7.5, 2.3 * len(examples)), squeeze=False, layout="constrained")
    for row, example in enumerate(examples.itertuples()):
        anomaly_map = maps[example.image_id].astype(np.float32)
        size = anomaly_map.shape[0]
        query = _square(example.image_path, size, "RGB")
        label = "anomalous" if example.label == 1 else "normal"
        axes[row, 0].imshow(query)
        axes[row, 0].set_title(f"{example.verdict}: {label}, score {example.score:.3f}\n{example.image_id}", fontsize=7)
        axes[row, 1].imshow(query)
        shown = axes[row, 1].imshow(anomaly_map, cmap="jet", alpha=0.5, vmin=low, vmax=high)
        axes[row, 1].set_title("anomaly map", fontsize=8)
        mask = mask_paths.get(example.image_id, "")
        if mask or example.label == 0:
            truth = _square(mask, size, "L") if mask else np.zeros((size, size), np.uint8)
            axes[row, 2].imshow(truth, cmap="gray", vmin=0, vmax=255)
            axes[row, 2].set_title("ground truth" if mask else "ground truth (no defect)", fontsize=8)
        else:
            axes[row, 2].text(0.5, 0.5, "no mask", ha="center", va="center", transform=axes[row, 2].transAxes)
        for axis in axes[row]:
            axis.set_xticks([])
            axis.set_yticks([])
    figure.colorbar(shown, ax=axes.ravel().tolist(), shrink=0.5, label="anomaly score (shared scale)")
    figure.suptitle(title, fontsize=10)
    return save_figure(figure, path, dpi=90)


def write_gallery(scores_parquet: str | Path, maps_h5: str | Path, manifest: pd.DataFrame, path: str | Path, title: str, n: int = 2) -> Path:
    """Gallery of one score file and its ``.maps.h5`` (see :func:`pick_examples`), ``n`` images per group.

    ``manifest`` supplies each image's ``mask_path``. A maps file without a ``maps`` dataset (a scorer
    that produces no maps) is an error that names the file. The score file's ``weights`` column decides
    whether the title carries the random-weights note.
    """
    import h5py

    scores = pd.read_parquet(scores_parquet)
    examples = pick_examples(scores, n)
    with h5py.File(maps_h5, "r") as h5:
        if "maps" not in h5:
            raise ValueError(f"{maps_h5}: this scorer wrote no anomaly maps, so it has no gallery; leave it out of the gallery rule")
        ids = [i.decode() if isinstance(i, bytes) else str(i) for i in h5["image_ids"][()]]
        rows = {image_id: r for r, image_id in enumerate(ids)}
        maps = {i: h5["maps"][rows[i]] for i in examples["image_id"]}
    masks = manifest.set_index("image_id")["mask_path"].to_dict()
    return gallery_figure(examples, maps, masks, path, with_weights_note(title, scores))
