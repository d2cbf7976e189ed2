"""The ``winclip`` scorer: text embeddings and reference memory from the context, scores of the test images.

Params (the scorer's config entry): ``prompt_preset`` (``paper`` | ``anomalib``), ``temperature``
(0.07), ``window_sizes`` ([2, 3]), ``text_normalisation`` (``raw_mean`` | ``normalised_mean``, default
per preset). ``class_name_mode`` is resolved into ``ctx.class_name`` by :mod:`fsad.scorers.run`.
Zero-shot when the split has no normal references, WinCLIP+ otherwise.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from fsad.scorers.base import ScoreResult, ScoringContext, register_scorer
from fsad.scorers.winclip.torch_model import build_reference_memory, upsample_maps, winclip_scores
from fsad.text.prompts import text_embeddings

DEFAULT_WINDOW_SIZES = [2, 3]




@register_scorer("winclip")
def score(ctx: ScoringContext) -> ScoreResult:
    """Score ``ctx.split.test`` with WinCLIP (no normal references) or WinCLIP+ (``split.normal_refs``)."""
    params = ctx.params
    window_sizes = list(params.get("window_sizes") or DEFAULT_WINDOW_SIZES)
    temperature = float(params.get("temperature", 0.07))
    text = text_embeddings(
        ctx.text_encoder, ctx.class_name, params.get("prompt_preset", "paper"), params.get("text_normalisation")
    ).to(ctx.device)

    memory = None
    if ctx.split.normal_refs:
        references = ctx.features(ctx.split.normal_refs)
        references.require_windows(window_sizes, "winclip")
        memory = build_reference_memory(references, window_sizes)

    ids = list(ctx.split.test)
    image_scores, sub_scores, maps = [], [], []
    for features in ctx.test_batches(window_sizes, "winclip"):
        out = winclip_scores(features, text, window_sizes, temperature, memory)
        image_scores.append(out.image_scores)
        sub_scores.append(out.sub_scores)
        maps.append(upsample_maps(out.maps, ctx.map_size))

    columns = {"image_id": ids, "score": _cat_numpy(image_scores)}
    for name in sub_scores[0]:
        columns[name] = _cat_numpy([step[name] for step in sub_scores])
    frame = pd.DataFrame(columns)
    return ScoreResult(frame, _cat_numpy(maps))


def _cat_numpy(parts: list[torch.Tensor]) -> np.ndarray:
    return torch.cat(parts).float().cpu().numpy()
