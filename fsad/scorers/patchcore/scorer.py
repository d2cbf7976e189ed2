"""The ``patchcore`` scorer: a memory bank of the run's references' patches, the test images' distances to it.

Params (``schema.yaml`` beside this module, defaults filled in): ``layers`` (the CNN stages, 2 and 3), ``embedding``,
``coreset_ratio``, ``neighbours``, ``image_score``, ``sigma``, ``generated_references`` (with ``generator``: the pool's
generated images join the references). Maps are made at the backbone's input side (``ctx.input_size``) as anomalib
does and resized bilinearly to the evaluation side when that differs. Column ``max_distance``: the plain maximum.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from fsad.scorers.base import ScoreResult, ScoringContext
from fsad.maps import upsample
from fsad.scorers.patchcore.torch_model import anomaly_maps, greedy_coreset, patch_embeddings, patch_scores, reweighted_scores

# Images embedded at a time: the original embedding's 3x3 neighbourhoods of a 1024-channel stage are ~37 MB per image.
EMBED_CHUNK = 8


def _embed(features, layers: list[int], embedding: str) -> tuple[torch.Tensor, int]:
    parts = [patch_embeddings(features.select(features.image_ids[i : i + EMBED_CHUNK]), layers, embedding) for i in range(0, len(features.image_ids), EMBED_CHUNK)]
    return torch.cat([part for part, _ in parts]), parts[0][1]


def score(ctx: ScoringContext) -> ScoreResult:
    """Score ``ctx.split.test`` against the bank of ``split.normal_refs`` (and the pool's generated images)."""
    params = ctx.params
    layers = list(params["layers"])
    if ctx.input_size is None:
        raise ValueError("patchcore makes its maps at the backbone's input side; the scoring context gives none (ScoringContext.input_size)")
    references = ctx.reference_features(params["generated_references"])
    references.require(layers=layers)
    embeddings, grid = _embed(references, layers, params["embedding"])
    bank = embeddings.reshape(-1, embeddings.shape[-1])
    patches = len(bank)
    if params["coreset_ratio"] < 1:
        bank = bank[greedy_coreset(bank, params["coreset_ratio"], ctx.seed)]

    image_scores, maxima, maps = [], [], []
    for features in ctx.test_batches([]):
        features.require(layers=layers)
        embedded, _ = _embed(features, layers, params["embedding"])
        scores, index = patch_scores(embedded, bank)
        maxima.append(scores.amax(dim=1))
        image_scores.append(maxima[-1] if params["image_score"] == "max" else reweighted_scores(scores, index, embedded, bank, params["neighbours"]))
        batch_maps = anomaly_maps(scores, grid, ctx.input_size, params["sigma"])
        maps.append(batch_maps if ctx.input_size == ctx.map_size else upsample(batch_maps, ctx.map_size, mode="bilinear"))

    frame = pd.DataFrame({"image_id": list(ctx.split.test), "score": _numpy(image_scores), "max_distance": _numpy(maxima)})
    extra = {"memory": {"references": len(references.image_ids), "patches": patches, "bank": len(bank), "grid": grid, "dim": int(bank.shape[1])}}
    return ScoreResult(frame, _numpy(maps), extra)


def _numpy(parts: list[torch.Tensor]) -> np.ndarray:
    return torch.cat(parts).float().cpu().numpy()
