"""The ``winclip`` scorer: text embeddings and reference memory from the context, scores of the test images.

Params (``schema.yaml`` beside this module, defaults filled in): ``window_sizes``, and the shared prompt parameters
``prompt_preset``, ``temperature`` (None: the preset's), ``text_normalisation`` (None: the preset's)
(:mod:`fsad.text.prompt_params`). ``class_name_mode`` is resolved into ``ctx.class_name`` by :mod:`fsad.scorers.run`.
Zero-shot when the split has no normal references, WinCLIP+ otherwise. With ``generator`` set, the generated images
of the run's pool (``generated_references`` of them, all when null) join the references (One-to-Normal's transfer).
"""

from __future__ import annotations

import pandas as pd

from fsad.maps import concat_numpy, upsample
from fsad.scorers.base import ScoreResult, ScoringContext
from fsad.scorers.winclip.torch_model import build_reference_memory, winclip_scores
from fsad.text.prompt_params import class_text_embeddings, prompt_temperature


def score(ctx: ScoringContext) -> ScoreResult:
    """Score ``ctx.split.test`` with WinCLIP (no normal references) or WinCLIP+ (``split.normal_refs``)."""
    params = ctx.params
    window_sizes = list(params["window_sizes"])
    temperature = prompt_temperature(params)
    text = class_text_embeddings(params, ctx.text_encoder, ctx.class_name, ctx.device)

    memory = None
    if ctx.split.normal_refs:
        references = ctx.reference_features(params["generated_references"])
        references.require(window_sizes=window_sizes)
        memory = build_reference_memory(references, window_sizes)

    ids = list(ctx.split.test)
    image_scores, sub_scores, maps = [], [], []
    for features in ctx.test_batches(window_sizes):
        out = winclip_scores(features, text, window_sizes, temperature, memory)
        image_scores.append(out.image_scores)
        sub_scores.append(out.sub_scores)
        maps.append(upsample(out.maps, ctx.map_size))

    columns = {"image_id": ids, "score": concat_numpy(image_scores)}
    for name in sub_scores[0]:
        columns[name] = concat_numpy([step[name] for step in sub_scores])
    frame = pd.DataFrame(columns)
    return ScoreResult(frame, concat_numpy(maps))
