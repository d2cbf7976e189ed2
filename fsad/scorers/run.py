"""Run one scorer instance on one (dataset, category, setting, run): read the inputs, call it, write its outputs.

The scores parquet carries its own keys (scorer, method, dataset, category, setting, run, weights) in its
metadata, so evaluation never parses them out of its path.
"""

from __future__ import annotations

import dataclasses
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
from fsad.scorers.base import GeneratedImages, MemberScores, ScoreResult, ScoringContext
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


def write_maps(maps: np.ndarray | None, image_ids: list[str], path: str | Path, validation: tuple[list[str], np.ndarray] | None = None) -> None:
    """Write anomaly maps (float16) and their image ids to HDF5 atomically; an empty file when there are none.

    ``validation`` (ids, ``(V, S, S)`` maps) goes beside them as ``validation_image_ids`` and ``validation_maps``.
    """
    strings = h5py.string_dtype()
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as h5:
        h5.create_dataset("image_ids", data=np.array(image_ids, dtype=object), dtype=strings)
        if maps is not None:
            h5.create_dataset("maps", data=maps.astype(np.float16), compression="gzip", compression_opts=4)
        if validation is not None:
            h5.create_dataset("validation_image_ids", data=np.array(validation[0], dtype=object), dtype=strings)
            h5.create_dataset("validation_maps", data=validation[1].astype(np.float16), compression="gzip", compression_opts=4)


def score_validation_set(ctx: ScoringContext, score_step, spec: dict[str, Any]) -> tuple[ScoreResult, np.ndarray, dict[str, list]]:
    """Score the labelled validation set of a fusion member (:mod:`fsad.fusion.validation_set`) with ``score_step``.

    The step runs as on the test images, on a context whose ``split.test`` is the validation set: the validation
    normals read from the store, the made images encoded with ``ctx.encode_images``. Returns the result, the ``(V,)``
    labels and the set's description (ids, labels, sources, defect types).
    """
    from PIL import Image

    from fsad.features.types import FeatureBatch
    from fsad.fusion.validation_set import made_validation_images

    if ctx.encode_images is None:
        raise ValueError(f"{ctx.split.label}: scoring a fusion's validation set needs an image encoder")
    normals = {i: Image.open(ctx.manifest.loc[i, "image_path"]).convert("RGB") for i in ctx.split.validation}
    made = made_validation_images(normals, spec["normal_augmentations"], spec["anomalies"], list(spec["defect_types"]), ctx.seed)
    encoded = dataclasses.replace(ctx.encode_images(made.images).to(ctx.device, torch.float32), image_ids=made.image_ids)
    made_ids = set(made.image_ids)

    def features(ids: list[str]) -> FeatureBatch:
        stored = [i for i in ids if i not in made_ids]
        parts = ([ctx.features(stored)] if stored else []) + [encoded.select([i for i in ids if i in made_ids])]
        return FeatureBatch.concat(parts).select(list(ids))

    ids = list(ctx.split.validation) + made.image_ids
    labels = np.concatenate([np.zeros(len(ctx.split.validation), dtype=int), made.labels])
    rows = ctx.manifest.loc[made.sources].copy()
    rows["image_id"], rows["label"], rows["defect_type"], rows["mask_path"] = made.image_ids, made.labels, made.defect_types, ""
    manifest = pd.concat([ctx.manifest, rows.set_index(pd.Index(made.image_ids, name=ctx.manifest.index.name))])
    validation_ctx = dataclasses.replace(ctx, split=dataclasses.replace(ctx.split, test=ids), manifest=manifest, features=features)
    result = score_step(validation_ctx)
    if list(result.scores["image_id"]) != ids:
        raise RuntimeError(f"{ctx.split.label}: the validation set's scores come back for other images than it holds")
    description = {
        "image_ids": ids,
        "labels": [int(v) for v in labels],
        "sources": list(ctx.split.validation) + made.sources,
        "defect_types": [""] * len(ctx.split.validation) + made.defect_types,
    }
    return result, labels, description


def read_members(members: list[dict[str, Any]], test_ids: list[str], map_size: int) -> dict[str, MemberScores]:
    """Each member's test scores and maps and its validation set's (``members``: ``scorer, scores, maps, details`` paths)."""
    if not members:  # every other method's job: no import of the evaluation (and scikit-learn) at all
        return {}
    from fsad.evaluation.collect import read_maps
    from fsad.io import read_json

    out = {}
    for member in members:
        frame = pd.read_parquet(member["scores"])
        if list(frame["image_id"]) != list(test_ids):
            raise ValueError(f"{member['scores']}: scores other test images than this split's; rerun scorer {member['scorer']!r}")
        validation = read_json(member["details"]).get("validation_set")
        if validation is None:
            raise ValueError(f"{member['details']}: scorer {member['scorer']!r} scored no validation set; rerun its score job")
        with h5py.File(member["maps"], "r") as h5:
            validation_maps = h5["validation_maps"][()].astype(np.float32) if "validation_maps" in h5 else None
        out[member["scorer"]] = MemberScores(
            test=frame,
            test_maps=read_maps(member["maps"], list(test_ids), map_size),
            validation_ids=list(validation["image_ids"]),
            validation_labels=np.asarray(validation["labels"], dtype=int),
            validation_scores=np.asarray(validation["score"], dtype=np.float64),
            validation_maps=validation_maps,
        )
    return out


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
        validation_set: when a fusion names this instance, what its labelled validation set holds
            (:mod:`fsad.fusion.validation_set`); scored after the test images, into the details and maps files.
        members: the member instances' files a fusion reads (``scorer, scores, maps, details``), in order.
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
    validation_set: dict[str, Any] | None = None
    members: list[dict[str, Any]] = field(default_factory=list)


def rule_score_job(smk: Any, scorer: str, **fields: Any) -> ScoreJob:
    """The :class:`ScoreJob` of a Snakemake job of rule score or inspect_score (``smk``): the inputs and params the two
    share, plus ``fields`` (outputs, generated images, members)."""
    return ScoreJob(
        scorer,
        method_module=smk.params.method_module,
        split_path=smk.input.split,
        manifest_path=smk.input.manifest,
        features_store=smk.input.features,
        text_cache_dir=smk.params.text_cache,
        backbone_spec=smk.params.backbone,
        scorer_params=smk.params.scorer_params,
        map_size=smk.params.map_size,
        weights_fallback=smk.params.weights_fallback,
        seed=smk.params.seed,
        model_path=smk.input.get("model"),
        **fields,
    )


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
        members=read_members(job.members, split.test, job.map_size),
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
    validation = None
    if job.validation_set is not None:
        with torch.inference_mode():
            validation_result, _, validation = score_validation_set(ctx, score_step, job.validation_set)
        validation["score"] = [float(v) for v in validation_result.scores["score"]]
        validation_maps = None if validation_result.maps is None else (validation["image_ids"], validation_result.maps)
        log.info("scored a validation set of %d images for the fusions that read this instance", len(validation["image_ids"]))

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
    write_maps(result.maps, split.test, job.out_maps, None if validation is None else validation_maps)
    details = {
        **keys,
        "n_test": len(split.test),
        "seconds": round(seconds, 3),
        "images_per_second": round(len(split.test) / seconds, 3) if seconds > 0 else None,
        "model": None if job.model_path is None else str(job.model_path),
        "scorer_details": result.extra or {},
    }
    if validation is not None:
        details["validation_set"] = validation
    write_json(job.out_details, details)
    # The scores go last: a job killed at any point leaves no score file whose maps or details are missing.
    write_scores(result, ctx.manifest, keys, job.out_scores)
    log.info("scored %d images in %.1f s (%s weights)", len(split.test), seconds, weights)
    return details
