"""The ``anomalous_memory`` scorer: one masked anomalous image, nine sub-scores, validated weights.

Params (``schema.yaml`` beside this module, defaults filled in): ``window_sizes`` (the patch scale is always
added), ``coverage_threshold``, ``partial_windows`` (see
:func:`~fsad.scorers.anomalous_memory.torch_model.split_by_coverage`), ``n_augmentations``, ``n_draws``,
``distributions``, ``score_weights`` (``baseline`` or a distribution: which total fills ``score`` and the fused
map), ``prompt_preset``, ``temperature``, ``text_normalisation`` (as winclip: :mod:`fsad.text.prompt_params`).

The zero-shot map (part of the fused map) aggregates the windows of every size in ``window_sizes``; the
zero-shot sub-score is the image embedding's score either way.

Columns: ``score``, the sub-scores (``zero_shot``, ``reference_{scale}``, ``anomalous_{scale}``),
``score_baseline`` and ``score_{distribution}`` per validated distribution. ``ScoreResult.extra`` holds
the memory choices per scale and the weight-validation report.

Needs ``ctx.encode_images`` to encode the augmented images. With ``generator`` set, the run's pool's generated images
(``generated_references`` of them, all when null) join the reference memory of every scale (One-to-Normal's transfer);
the split's normal references, if the setting has any, stay out of it as without the pool.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import torch
from PIL import Image

from fsad.data.augment import augment
from fsad.fusion.validation import WeightValidation, validate_weights
from fsad.fusion.score_weights import baseline_weights
from fsad.maps import upsample
from fsad.scorers.anomalous_memory.torch_model import (
    DualMemory,
    anomalous_memory_scores,
    build_dual_memory,
    fused_map,
    sub_score_names,
    weighted_total,
    with_generated_references,
)
from fsad.scorers.base import ScoreResult, ScoringContext
from fsad.seeding import derive_seed
from fsad.text.prompt_params import class_text_embeddings, prompt_temperature

log = logging.getLogger(__name__)


def _anomalous_sample(ctx: ScoringContext) -> tuple[str, Image.Image, Image.Image]:
    """The split's one anomalous reference: id, RGB image and ``"L"`` mask (non-zero pixels are the defect)."""
    refs = ctx.split.anomalous_refs
    if len(refs) != 1:
        raise ValueError(
            f"anomalous_memory needs exactly one anomalous reference image per split, {ctx.split.label} has {len(refs)}; "
            f"use a setting with anomalous_shots: 1 (e.g. a1) for this scorer"
        )
    row = ctx.manifest.loc[refs[0]]
    mask_path = row["mask_path"]
    if not isinstance(mask_path, str) or not mask_path:
        raise ValueError(
            f"anomalous_memory needs a pixel mask for the anomalous reference {refs[0]!r} ({ctx.split.label}), but the "
            f"manifest of dataset {ctx.split.dataset!r} gives none; this dataset has no defect masks: drop it from "
            f"scorers.anomalous_memory.datasets in the config"
        )
    image = Image.open(row["image_path"]).convert("RGB")
    mask = Image.open(mask_path).convert("L")
    if mask.size != image.size:
        raise ValueError(f"{mask_path}: mask size {mask.size} differs from its image {row['image_path']} ({image.size})")
    if not np.array(mask).any():
        raise ValueError(f"{mask_path}: the mask of anomalous reference {refs[0]!r} marks no defect pixel; fix the mask or the manifest label")
    return refs[0], image, mask




def _augmented_set(ctx: ScoringContext, image: Image.Image, mask: Image.Image, n_augmentations: int) -> tuple[list[Image.Image], np.ndarray]:
    """Augmentations of the anomalous reference (label 1) and the validation normals (label 0)."""
    n_anomalous = (n_augmentations + 1) // 2
    images = [img for img, _ in augment(image, mask, n_anomalous, derive_seed(ctx.seed, "augment", "anomalous"))]
    counts = np.array_split(np.arange(n_augmentations - n_anomalous), len(ctx.split.validation))
    for image_id, share in zip(ctx.split.validation, counts):
        normal = Image.open(ctx.manifest.loc[image_id, "image_path"]).convert("RGB")
        images += [img for img, _ in augment(normal, None, len(share), derive_seed(ctx.seed, "augment", image_id))]
    labels = np.array([1] * n_anomalous + [0] * (len(images) - n_anomalous))
    return images, labels


def _validate(
    ctx: ScoringContext,
    params: dict,
    image: Image.Image,
    mask: Image.Image,
    memory: DualMemory,
    text: torch.Tensor,
    window_sizes: list[int],
    temperature: float,
    distributions: list[str],
    test_sub_scores: np.ndarray,
) -> WeightValidation:
    if ctx.encode_images is None:
        raise ValueError("anomalous_memory validates weights on augmented images and needs ctx.encode_images to encode them")
    if not ctx.split.validation:
        raise ValueError(
            f"anomalous_memory weight validation needs a normal validation image, {ctx.split.label} has none; use a setting "
            f"with validation_normals >= 1 (e.g. a1), or set scorers.anomalous_memory.distributions to [] and score_weights to baseline"
        )
    images, labels = _augmented_set(ctx, image, mask, params["n_augmentations"])
    features = ctx.encode_images(images).to(ctx.device)
    features.require(window_sizes=window_sizes)
    validation_scores = anomalous_memory_scores(features, memory, text, window_sizes, temperature).sub_scores.cpu().numpy()
    test_labels = ctx.manifest.loc[ctx.split.test, "label"].to_numpy()
    return validate_weights(
        validation_scores,
        labels,
        test_sub_scores,
        test_labels,
        sub_score_names(window_sizes),
        distributions,
        params["n_draws"],
        ctx.seed,
    )


def score(ctx: ScoringContext) -> ScoreResult:
    """Score ``ctx.split.test`` with the zero-shot, reference-memory and anomalous-memory sub-scores."""
    params = ctx.params
    window_sizes = list(params["window_sizes"])
    temperature = prompt_temperature(params)
    names = sub_score_names(window_sizes)
    distributions = list(params["distributions"])
    mode = params["score_weights"]
    coverage_threshold = float(params["coverage_threshold"])
    if mode != "baseline" and mode not in distributions:
        raise ValueError(f"anomalous_memory: score_weights is {mode!r} but distributions are {distributions}; use baseline or one of them")

    ref_id, image, mask = _anomalous_sample(ctx)
    reference = ctx.features([ref_id])
    reference.require(window_sizes=window_sizes)
    memory = build_dual_memory(
        reference, torch.from_numpy(np.array(mask) > 0), window_sizes, coverage_threshold, params["partial_windows"]
    )
    generated = ctx.generated_features(params["generated_references"])
    if generated is not None:
        generated.require(window_sizes=window_sizes)
        memory = with_generated_references(memory, generated, window_sizes)
        log.info("%s: %d generated images join the reference memory", ctx.split.label, len(generated.image_ids))
    for choice in memory.choices.values():
        log.info("%s memory %s", ctx.split.label, choice.summary())
        if choice.anomalous_fallback:
            log.warning(
                "%s scale %s: no window reaches coverage %.2f (max %.3f); the %d most covered windows form the anomalous memory",
                ctx.split.label, choice.scale, coverage_threshold, choice.max_coverage, len(choice.anomalous),
            )
        if choice.normal_fallback:
            log.warning("%s scale %s: no window is free of the defect; the %d least covered form the reference memory", ctx.split.label, choice.scale, len(choice.normal))
    text = class_text_embeddings(params, ctx.text_encoder, ctx.class_name, ctx.device)

    ids = list(ctx.split.test)
    sub_scores, grid_maps = [], []
    for features in ctx.test_batches(window_sizes):
        out = anomalous_memory_scores(features, memory, text, window_sizes, temperature)
        sub_scores.append(out.sub_scores)
        grid_maps.append(out.maps)
    test_sub_scores = torch.cat(sub_scores)

    weights = {"baseline": baseline_weights(len(window_sizes) + 1)}
    validation = None
    if distributions:
        validation = _validate(ctx, params, image, mask, memory, text, window_sizes, temperature, distributions, test_sub_scores.cpu().numpy())
        weights |= validation.chosen
    chosen = torch.as_tensor(weights[mode], dtype=torch.float32)

    columns: dict[str, object] = {"image_id": ids, "score": weighted_total(test_sub_scores, chosen).cpu().numpy()}
    columns |= {name: test_sub_scores[:, i].cpu().numpy() for i, name in enumerate(names)}
    columns |= {f"score_{name}": weighted_total(test_sub_scores, torch.as_tensor(w, dtype=torch.float32)).cpu().numpy() for name, w in weights.items()}
    maps = upsample(torch.cat([fused_map(m, chosen) for m in grid_maps]), ctx.map_size)
    extra = {
        "anomalous_ref": ref_id,
        "score_weights": mode,
        "sub_scores": names,
        "baseline_weights": [float(w) for w in weights["baseline"]],
        "memory": {scale: choice.summary() for scale, choice in memory.choices.items()},
        "generated_references": [] if generated is None else list(generated.image_ids),
        "reference_memory_sizes": {scale: int(len(entries)) for scale, entries in memory.reference.items()},
        "validation": None if validation is None else validation.report,
    }
    return ScoreResult(pd.DataFrame(columns), maps.float().cpu().numpy(), extra)
