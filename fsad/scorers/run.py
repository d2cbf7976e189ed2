"""Run one scorer instance on one (dataset, category, setting, run): read the inputs, call it, write its outputs.

The scores parquet carries its own keys (scorer, method, dataset, category, setting, run, weights) in its
metadata, so evaluation never parses them out of its path.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pandas as pd
import torch

from fsad.data.manifest import read_manifest
from fsad.data.splits import Split, read_split
from fsad.io import atomic_path, remove_stale_temporaries, write_json
from fsad.backbones.session import BackboneSession
from fsad.logs import seconds_since_process_start
from fsad.provenance import environment
from fsad.scorers.base import GeneratedImages, ScoreResult, ScoringContext
from fsad.scorers.method import Method, resolve
from fsad.scorers.registry import load_method
from fsad.score_files import write_score_table

log = logging.getLogger(__name__)
# Columns a score file takes from the manifest (and ``weights`` from the feature store), never from the scorer.
MANIFEST_FIELDS = ["image_path", "label", "defect_type"]


def _check_result(result: ScoreResult, split: Split, map_size: int, scorer: str, maps: bool) -> None:
    ids = list(result.scores["image_id"])
    if maps != (result.maps is not None):
        raise RuntimeError(f"scorer {scorer!r} returned {'no ' if result.maps is None else ''}anomaly maps, but its method declares maps={maps}")
    if ids != split.test:
        raise RuntimeError(f"scorer {scorer!r} returned scores for other images than the split's test list")
    if "score" not in result.scores:
        raise RuntimeError(f"scorer {scorer!r} returned no 'score' column")
    taken = sorted(set(result.scores.columns) & {*MANIFEST_FIELDS, "weights"})
    if taken:
        raise RuntimeError(f"scorer {scorer!r} returned column(s) {taken}, which the score file fills in itself (manifest, weights); rename them")
    if result.maps is not None and result.maps.shape != (len(ids), map_size, map_size):
        raise RuntimeError(f"scorer {scorer!r} returned maps of shape {result.maps.shape}, expected {(len(ids), map_size, map_size)}")


def write_scores(result: ScoreResult, manifest: pd.DataFrame, keys: dict[str, Any], path: str | Path) -> pd.DataFrame:
    """Join the test images' manifest fields to the scores and write the parquet atomically.

    ``keys`` (scorer, method, dataset, category, setting, run, weights) go into the parquet's metadata;
    ``weights`` is also a column, so tables built from score rows can label random-weight results.
    """
    info = manifest.loc[result.scores["image_id"], MANIFEST_FIELDS].reset_index()
    frame = info.merge(result.scores, on="image_id", how="left", validate="one_to_one")
    frame["weights"] = keys["weights"]
    write_score_table(frame, keys, path)
    return frame


def write_maps(maps: np.ndarray | None, image_ids: list[str], path: str | Path) -> None:
    """Write anomaly maps (float16) and their image ids to HDF5 atomically; an empty file when there are none."""
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as h5:
        h5.create_dataset("image_ids", data=np.array(image_ids, dtype=object), dtype=h5py.string_dtype())
        if maps is not None:
            h5.create_dataset("maps", data=maps.astype(np.float16), compression="gzip", compression_opts=4)


def read_model(path: str | Path | None, device: torch.device) -> dict[str, torch.Tensor]:
    """The tensors of a fit's ``model.safetensors`` on ``device``; empty without a fit."""
    if path is None:
        return {}
    from safetensors.torch import load_file

    return load_file(str(path), device=str(device))


def read_generated(
    directory: str | Path | None, store_path: str | Path | None, weights: str, device: torch.device, reader: str
) -> GeneratedImages | None:
    """A run's pool or personalized images (index and features) for the scoring context; None when not read."""
    if directory is None:
        return None
    from fsad.diffusion.image_sets import read_image_set
    from fsad.features.store import FeatureStore
    from fsad.features.types import read_by

    store = FeatureStore(store_path)
    if store.weights != weights:
        raise ValueError(f"{store_path}: features of weights {store.weights!r}, the test images' have {weights!r}; delete it and rerun")
    return GeneratedImages(read_image_set(directory), read_by(lambda ids: store.load(ids, device=device), reader))


@dataclass(frozen=True)
class ScoreJob:
    """One score job, as rules/scores.smk declares it (workflow_scripts/score.py builds it from the rule).

    Attributes:
        scorer: the instance's name; method_module: the module declaring its method (``fsad.scorers.winclip.method``).
        split_path, manifest_path, features_store: the run's split, the dataset's manifest, the category's feature store.
        text_cache_dir: the prompt-embedding cache of the instance's backbone; backbone_spec: that backbone's network.
        scorer_params: the instance's parameters as its method's score step receives them (defaults filled in).
        map_size: side of the anomaly maps; weights_fallback, seed: the config's.
        out_scores, out_maps, out_details: the score parquet, the maps' HDF5 and the details JSON it writes.
        model_path: the instance's fitted ``model.safetensors`` when its method has a fit.
        generated: the generated images the method declares it reads: ``generated_pool`` and ``generated_pool_features`` (directory and
            feature store), ``personalized`` and ``personalized_features``.
    """

    scorer: str
    method_module: str
    split_path: str | Path
    manifest_path: str | Path
    features_store: str | Path
    text_cache_dir: str | Path
    backbone_spec: dict[str, Any]
    scorer_params: dict[str, Any]
    map_size: int
    weights_fallback: str
    seed: int
    out_scores: str | Path
    out_maps: str | Path
    out_details: str | Path
    model_path: str | Path | None = None
    generated: dict[str, str | Path] = field(default_factory=dict)


def scoring_context(job: ScoreJob, device: torch.device) -> tuple[Method, ScoringContext, str]:
    """The job's method, the context its score step receives (split, manifest, features, fit) and the features' weights."""
    from fsad.features.store import FeatureStore
    from fsad.features.types import read_by

    method: Method = load_method(job.method_module)
    scorer_params = job.scorer_params
    reader = f"scorers.{job.scorer}"
    split = read_split(job.split_path)
    manifest = read_manifest(job.manifest_path, split.category).set_index("image_id", drop=False)
    store = FeatureStore(job.features_store)
    weights = store.weights
    generated = job.generated
    session = BackboneSession(job.backbone_spec, weights, job.text_cache_dir, job.weights_fallback, job.seed, device)
    ctx = ScoringContext(
        split=split,
        manifest=manifest,
        features=read_by(lambda ids: store.load(ids, device=device), reader),
        text_encoder=lambda prompts: session.text_encoder(prompts),
        class_name=method.prompt_class_name(scorer_params, split.category),
        params=scorer_params,
        map_size=job.map_size,
        device=device,
        seed=split.seed,
        encode_images=read_by(session.image_encoder(method.features(scorer_params)), reader),
        model=read_model(job.model_path, device),
        backbone=lambda: session.backbone,
        generated_pool=read_generated(generated.get("generated_pool"), generated.get("generated_pool_features"), weights, device, reader),
        personalized=read_generated(generated.get("personalized"), generated.get("personalized_features"), weights, device, reader),
        input_size=job.backbone_spec.get("image_size"),
    )
    return method, ctx, weights


def run_scorer(job: ScoreJob, device: torch.device | str) -> dict[str, Any]:
    """Score the split's test images with the job's scorer instance and write scores, maps and a details JSON."""
    device = torch.device(device)
    method, ctx, weights = scoring_context(job, device)
    scorer, map_size, split = job.scorer, job.map_size, ctx.split
    score_step = resolve(method.score)
    age = seconds_since_process_start()
    if age is not None:  # the job's start-up as bench/startup.py reports it: everything before the method's work
        log.info("scoring starts: %.2f s after the process started", age)
    started = time.perf_counter()
    with torch.inference_mode():
        result = score_step(ctx)
    seconds = time.perf_counter() - started
    _check_result(result, split, map_size, scorer, method.maps)

    keys = {
        "scorer": scorer,
        "method": method.name,
        "dataset": split.dataset,
        "category": split.category,
        "setting": split.setting,
        "run": split.run,
        "weights": weights,
        "environment": environment(),
    }
    for out in (job.out_maps, job.out_details, job.out_scores):
        for stale in remove_stale_temporaries(out):
            log.warning("removed %s, left by a score job that was killed", stale)
    write_maps(result.maps, split.test, job.out_maps)
    details = {
        **keys,
        "n_test": len(split.test),
        "seconds": round(seconds, 3),
        "images_per_second": round(len(split.test) / seconds, 3) if seconds > 0 else None,
        "model": None if job.model_path is None else str(job.model_path),
        "scorer_details": result.extra or {},
    }
    write_json(job.out_details, details)
    # The scores go last: a job killed at any point leaves no score file whose maps or details are missing.
    write_scores(result, ctx.manifest, keys, job.out_scores)
    log.info("scored %d images in %.1f s (%s weights)", len(split.test), seconds, weights)
    return details
