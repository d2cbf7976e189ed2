"""Run one scorer on one (dataset, category, setting, run): read the inputs, call it, write its outputs."""

from __future__ import annotations

import logging
import time
from functools import cache
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pandas as pd
import torch

from fsad.data.manifest import read_manifest
from fsad.io import atomic_path, read_json, write_json
from fsad.data.splits import Split, read_split
from fsad.scorers.base import ScoreResult, ScoringContext, get_scorer

log = logging.getLogger(__name__)


def _check_result(result: ScoreResult, split: Split, map_size: int, scorer: str) -> None:
    ids = list(result.scores["image_id"])
    if ids != split.test:
        raise RuntimeError(f"scorer {scorer!r} returned scores for other images than the split's test list")
    if "score" not in result.scores:
        raise RuntimeError(f"scorer {scorer!r} returned no 'score' column")
    if result.maps is not None and result.maps.shape != (len(ids), map_size, map_size):
        raise RuntimeError(f"scorer {scorer!r} returned maps of shape {result.maps.shape}, expected {(len(ids), map_size, map_size)}")


def write_scores(result: ScoreResult, manifest: pd.DataFrame, weights: str, path: str | Path) -> pd.DataFrame:
    """Join the test images' manifest fields to the scores and write the parquet atomically."""
    info = manifest.loc[result.scores["image_id"], ["image_path", "label", "defect_type"]].reset_index()
    frame = info.merge(result.scores, on="image_id", how="left", validate="one_to_one")
    frame["weights"] = weights
    with atomic_path(path) as tmp:
        frame.to_parquet(tmp, index=False)
    return frame


def write_maps(maps: np.ndarray | None, image_ids: list[str], path: str | Path) -> None:
    """Write anomaly maps (float16) and their image ids to HDF5 atomically; an empty file when there are none."""
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as h5:
        h5.create_dataset("image_ids", data=np.array(image_ids, dtype=object), dtype=h5py.string_dtype())
        if maps is not None:
            h5.create_dataset("maps", data=maps.astype(np.float16), compression="gzip", compression_opts=4)


def run_scorer(
    scorer: str,
    *,
    split_path: str | Path,
    manifest_path: str | Path,
    features_store: str | Path,
    text_cache_dir: str | Path,
    backbone_spec: dict[str, Any],
    scorer_params: dict[str, Any],
    map_size: int,
    weights_fallback: str,
    seed: int,
    device: torch.device,
    out_scores: str | Path,
    out_maps: str | Path,
    out_details: str | Path,
) -> dict[str, Any]:
    """Score the split's test images with ``scorer`` and write scores, maps and a details JSON.

    Prompt embeddings are memoised in ``text_cache_dir`` (shared by the jobs of one backbone).
    """
    from fsad.backbones.loading import load_backbone
    from fsad.backbones.window_embeddings import encode_images
    from fsad.features.cache import FeatureCache, canonical_spec
    from fsad.text.cache import cached_text_encoder
    from fsad.text.class_names import class_name

    split = read_split(split_path)
    manifest = read_manifest(manifest_path, split.category).set_index("image_id", drop=False)
    store = FeatureCache(features_store)

    @cache
    def backbone():
        # The text tower must be the one the features came from: rebuild the store's weights.
        return load_backbone(backbone_spec, device, weights_fallback, seed, weights=store.weights)

    def encode(images: list) -> Any:
        pixels = torch.stack([backbone().preprocess(img.convert("RGB")) for img in images]).to(device)
        return encode_images(backbone(), pixels, scorer_params.get("window_sizes") or store.window_sizes)

    ctx = ScoringContext(
        split=split,
        manifest=manifest,
        features=lambda ids: store.load(ids, device=device),
        text_encoder=cached_text_encoder(
            lambda prompts: backbone().encode_text(prompts),
            text_cache_dir,
            [canonical_spec(backbone_spec), store.weights],
        ),
        class_name=class_name(split.category, scorer_params.get("class_name_mode", "readable")),
        params=scorer_params,
        map_size=map_size,
        device=device,
        seed=split.seed,
        extra={"encode": encode},
    )
    started = time.perf_counter()
    with torch.inference_mode():
        result = get_scorer(scorer)(ctx)
    seconds = time.perf_counter() - started
    _check_result(result, split, map_size, scorer)

    write_scores(result, manifest, store.weights, out_scores)
    write_maps(result.maps, split.test, out_maps)
    details = {
        "scorer": scorer,
        "dataset": split.dataset,
        "category": split.category,
        "setting": split.setting,
        "run": split.run,
        "weights": store.weights,
        "n_test": len(split.test),
        "seconds": round(seconds, 3),
        "images_per_second": round(len(split.test) / seconds, 3) if seconds > 0 else None,
        "scorer_details": getattr(result, "extra", None) or {},
    }
    write_json(out_details, details)
    log.info("scored %d images in %.1f s (%s weights)", len(split.test), seconds, store.weights)
    return details
