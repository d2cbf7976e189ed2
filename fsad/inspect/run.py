"""One inspection: score the new images of a folder with a saved setup, decide with a threshold the setup has seen,
and write the scores, thresholds, unreadable files, overlays and gallery.

The setup's score step runs unchanged (the method plugin interface, no method named here) on a context whose test
list is the new images: their features come from the inspection's own store, everything else (references, fit,
generated pool, seed) is the benchmark run's. A second call scores what the setup has seen (its validation normals and
normal references, and a few of its saved test images): the last are compared with the saved scores, so that a method
whose scores depend on the other images scored with them is caught before any threshold of the run is applied.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import torch

from fsad.features.types import FeatureBatch, read_by
from fsad.inspect.thresholds import OPTIONS, Threshold, is_anomalous, normal_percentile, thresholds
from fsad.inspect.views import ColourScale, write_gallery, write_overlay
from fsad.evaluation.tables import RANDOM_WEIGHTS_NOTE
from fsad.io import read_json, write_json, write_text
from fsad.scorers.base import ScoreResult, ScoringContext
from fsad.scorers.method import Method, resolve
from fsad.scorers.run import ScoreJob, _check_result, scoring_context

log = logging.getLogger(__name__)

# New images have no label: one value for all of them keeps test-label reports of a method (an oracle row) undefined.
UNKNOWN_LABEL = -1
# Relative tolerance of the rescored saved test images against the run's saved scores (float16 features, other device).
RESCORE_TOLERANCE = 1e-3


@dataclass(frozen=True)
class InspectJob:
    """One inspection, as rules/inspect.smk declares it.

    Attributes:
        name: the inspection's config name.
        setup: the benchmark run's score job; its ``out_scores`` and ``out_maps`` are the saved files read here.
        images_index: the inspection store's JSON (readable images by id, unreadable files with their reason).
        images_store: the inspection's feature store (same backbone as the setup's).
        decision: the option of :data:`~fsad.inspect.thresholds.OPTIONS` that decides; fpr: the FPR options' rate.
        check_images: saved test images rescored and compared with the run's scores.
        out_scores, out_thresholds, out_unreadable, out_summary, out_gallery: files written; out_overlays: a folder.
    """

    name: str
    setup: ScoreJob
    images_index: str | Path
    images_store: str | Path
    decision: str
    fpr: float
    check_images: int
    out_scores: str | Path
    out_thresholds: str | Path
    out_unreadable: str | Path
    out_summary: str | Path
    out_overlays: str | Path
    out_gallery: str | Path


def joined_features(
    seen: Callable[[list[str]], FeatureBatch], new: Callable[[list[str]], FeatureBatch], new_ids: set[str]
) -> Callable[[list[str]], FeatureBatch]:
    """Features of any ids, in their order: the new images' from ``new``, every other image's from ``seen``."""

    def load(ids: list[str]) -> FeatureBatch:
        from_new = [i for i in ids if i in new_ids]
        from_seen = [i for i in ids if i not in new_ids]
        batches = ([seen(from_seen)] if from_seen else []) + ([new(from_new)] if from_new else [])
        return FeatureBatch.concat(batches).select(list(ids))

    return load


def new_image_rows(images: dict[str, str], category: str) -> pd.DataFrame:
    """Manifest rows of the new images (label unknown, no mask), indexed by ``image_id`` like the context's manifest."""
    rows = pd.DataFrame(
        {"image_id": list(images), "category": category, "split": "inspect", "label": UNKNOWN_LABEL, "defect_type": "unknown",
         "image_path": list(images.values()), "mask_path": ""}
    )
    return rows.set_index("image_id", drop=False)


def _score(method: Method, ctx: ScoringContext, job: ScoreJob) -> ScoreResult:
    with torch.inference_mode():
        result = resolve(method.score)(ctx)
    _check_result(result, ctx.split, job.map_size, job.scorer, method.maps)
    return result


def seen_ids(ctx: ScoringContext, saved_test: list[str], check_images: int) -> dict[str, list[str]]:
    """What the setup has seen and is scored again: validation normals, normal references, the first saved test images."""
    labels = ctx.manifest["label"]
    return {
        "validation_normals": [i for i in ctx.split.validation if labels[i] == 0],
        "reference_normals": list(ctx.split.normal_refs),
        "check": list(saved_test[:check_images]),
    }


def check_rescored(rescored: np.ndarray, saved: np.ndarray, ids: list[str], scorer: str) -> float:
    """The largest difference of the rescored saved test images from their saved scores; an error beyond tolerance."""
    difference = np.abs(np.asarray(rescored, np.float64) - np.asarray(saved, np.float64))
    allowed = RESCORE_TOLERANCE * np.maximum(np.abs(saved), 1.0)
    if np.any(difference > allowed):
        worst = int(np.argmax(difference - allowed))
        raise RuntimeError(
            f"{scorer}: test image {ids[worst]!r} scores {rescored[worst]:.6g} when scored again, {saved[worst]:.6g} in the run's "
            f"score file: this setup's scores depend on the images scored with them, so no threshold of the run applies to new "
            f"images; rerun the run's score job if its inputs changed since"
        )
    return float(difference.max(initial=0.0))


def _threshold_table(options: list[Threshold], decision: str, percentile_of: str) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "option": t.option,
                "threshold": t.value,
                "n_scores": t.n_scores,
                "fpr": t.fpr,
                "decides": t.option == decision,
                "percentile_of": t.option == percentile_of,
                "caveat": t.caveat,
                "unavailable": t.unavailable,
            }
            for t in options
        ]
    )


def percentile_population(decision: str) -> str:
    """The normal scores the percentiles compare with: the deciding option's, or the test normals for the F1-max one."""
    return "test_normals" if decision == "test_f1_max" else decision


def run_inspect(job: InspectJob, device: torch.device | str) -> dict[str, Any]:
    """Score the inspection's readable images with its setup and write every output; return the summary."""
    from fsad.features.store import FeatureStore

    if job.decision not in OPTIONS:
        raise ValueError(f"inspect.{job.name}.decision {job.decision!r} is not one of {OPTIONS}")
    device = torch.device(device)
    setup = job.setup
    method, ctx, weights = scoring_context(setup, device)
    index = read_json(job.images_index)
    images: dict[str, str] = index["images"]
    unreadable = pd.DataFrame(index["unreadable"], columns=["file", "reason"])
    if not images:
        raise ValueError(f"inspect.{job.name}: no readable image in the folder ({len(unreadable)} unreadable: {job.images_index})")
    store = FeatureStore(job.images_store)
    if store.weights != weights:
        raise ValueError(f"{job.images_store}: features of weights {store.weights!r}, the setup's have {weights!r}; delete it and rerun")

    saved = pd.read_parquet(setup.out_scores).set_index("image_id")
    manifest = pd.concat([ctx.manifest, new_image_rows(images, ctx.split.category)])
    new_load = read_by(lambda ids: store.load(ids, device=device), f"scorers.{setup.scorer}")
    features = joined_features(ctx.features, new_load, set(images))
    new_ctx = replace(ctx, split=replace(ctx.split, test=list(images)), manifest=manifest, features=features)
    new_result = _score(method, new_ctx, setup)

    groups = seen_ids(ctx, list(saved.index), job.check_images)
    seen = list(dict.fromkeys(i for ids in groups.values() for i in ids))
    seen_scores = _score(method, replace(ctx, split=replace(ctx.split, test=seen)), setup).scores.set_index("image_id")["score"]
    max_difference = check_rescored(seen_scores[groups["check"]].to_numpy(), saved.loc[groups["check"], "score"].to_numpy(), groups["check"], setup.scorer)

    test_labels = saved["label"].to_numpy()
    normals = {
        "validation_normals": seen_scores[groups["validation_normals"]].to_numpy(),
        "reference_normals": seen_scores[groups["reference_normals"]].to_numpy(),
        "test_normals": saved.loc[test_labels == 0, "score"].to_numpy(),
    }
    options = thresholds(normals, saved["score"].to_numpy(), test_labels, job.fpr)
    chosen = next(t for t in options if t.option == job.decision)
    if chosen.value is None:
        raise ValueError(f"inspect.{job.name}.decision {job.decision!r}: {chosen.unavailable}; choose another of {OPTIONS}")
    percentile_of = percentile_population(job.decision)

    frame = new_result.scores.copy()
    frame.insert(1, "file", [images[i] for i in frame["image_id"]])
    frame["normal_percentile"] = normal_percentile(frame["score"].to_numpy(), normals[percentile_of])
    frame["decision"] = np.where(is_anomalous(frame["score"].to_numpy(), chosen), "anomalous", "normal")
    for option in options:
        if option.value is not None:
            frame[f"anomalous_at_{option.option}"] = is_anomalous(frame["score"].to_numpy(), option)
    threshold_table = _threshold_table(options, job.decision, percentile_of)
    write_text(job.out_scores, frame.to_csv(index=False))
    write_text(job.out_thresholds, threshold_table.to_csv(index=False))
    write_text(job.out_unreadable, unreadable.to_csv(index=False))

    overlays_dir = Path(job.out_overlays)
    overlays_dir.mkdir(parents=True, exist_ok=True)
    overlays: dict[str, Path] = {}
    scale = None
    if new_result.maps is not None:
        import h5py

        with h5py.File(setup.out_maps, "r") as h5:
            scale = ColourScale.of_maps(h5["maps"][()], f"{setup.out_maps}")
        for row, anomaly_map in zip(frame.itertuples(), new_result.maps):
            caption = f"{Path(row.file).name}: score {row.score:.4g}, {row.decision}"
            overlays[row.image_id] = write_overlay(row.file, anomaly_map, scale, caption, overlays_dir / f"{row.image_id}.png")

    title = f"inspect {job.name}: {setup.scorer} on {ctx.split.label}"
    notes = [
        f"decision: {job.decision}" + (f" at FPR {job.fpr:g}" if chosen.fpr is not None else "") + f", threshold {chosen.value:.4g}; caveat: {chosen.caveat}",
        f"normal percentile: fraction of the {percentile_of.replace('_', ' ')} ({len(normals[percentile_of])} scores) below the image's score",
        f"colour scale: {scale.low:.4g} to {scale.high:.4g}, the range of the run's test maps" if scale else "this method gives no anomaly maps",
        f"features: {weights} weights",
    ]
    if "random" in weights:
        notes.append(RANDOM_WEIGHTS_NOTE)
    write_gallery(frame, overlays, threshold_table, unreadable, title, notes, job.out_gallery)
    summary = {
        "inspection": job.name,
        "scorer": setup.scorer,
        "method": method.name,
        "setup": ctx.split.label,
        "weights": weights,
        "decision": job.decision,
        "fpr": job.fpr,
        "threshold": chosen.value,
        "percentile_of": percentile_of,
        "n_images": len(images),
        "n_unreadable": len(unreadable),
        "n_anomalous": int((frame["decision"] == "anomalous").sum()),
        "rescored_test_images": groups["check"],
        "rescore_max_difference": max_difference,
        "colour_scale": None if scale is None else {"low": scale.low, "high": scale.high, "source": scale.source},
    }
    write_json(job.out_summary, summary)
    log.info("inspected %d images (%d unreadable): %d anomalous at %s", len(images), len(unreadable), summary["n_anomalous"], job.decision)
    return summary
