"""The score step of ``faprompt``: the fitted prompts (``ctx.model``) against the test images' cached tokens.

Anomaly map (Eq. 11): the mean of the static and (DAP) prior-adapted maps, upsampled bilinearly to the
evaluation resolution, then Gaussian-smoothed with ``sigma`` pixels of that resolution (scipy's
``gaussian_filter``, as both public test scripts). Image score: ``image_score`` (Eq. 9 by default).
Columns: ``score``, ``text_probability`` (Eq. 8) and ``map_max`` (the mean of the maps' maximum patch scores).
"""

from __future__ import annotations

import pandas as pd
import torch

from fsad.maps import concat_numpy, smooth
from fsad.scorers.base import ScoreResult, ScoringContext
from fsad.scorers.faprompt.params import build_learner, score_config, token_levels
from fsad.scorers.faprompt.torch_model import anomaly_maps, forward_batch, normalise


def score(ctx: ScoringContext) -> ScoreResult:
    """Score ``ctx.split.test`` zero-shot with the learned prompts of the instance's fit."""
    params = ctx.params
    backbone = ctx.backbone()
    learner = build_learner(params, backbone)
    learner.load_state_dict(ctx.model, strict=True)
    config = score_config(params)
    projection = backbone.model.visual.proj
    levels = list(params["vv_layers"])

    columns: dict[str, list[torch.Tensor]] = {"score": [], "text_probability": [], "map_max": []}
    maps = []
    for features in ctx.test_batches([]):
        tokens = token_levels(features, levels, projection)
        outputs = forward_batch(learner, tokens, normalise(features.image_embeddings.to(backbone.device)), config)
        columns["score"].append(outputs.image_score)
        columns["text_probability"].append(outputs.text_probability)
        columns["map_max"].append(outputs.map_maxima.mean(dim=1))
        maps.append(anomaly_maps(outputs, ctx.map_size))
    frame = pd.DataFrame({"image_id": list(ctx.split.test), **{name: concat_numpy(parts) for name, parts in columns.items()}})
    return ScoreResult(frame, smooth(concat_numpy(maps), params["sigma"]))
