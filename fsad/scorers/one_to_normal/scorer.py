"""The ``one_to_normal`` scorer: the triplet score of each test image against its personalized image, the run's
anomaly-free pool and the prompts (see :mod:`fsad.scorers.one_to_normal.torch_model`).

Params (``schema.yaml`` beside this module, defaults filled in): ``layers``, ``alpha``, ``beta``, ``memory_size``
(the pool memory: the run's references, then generated images in pool order, up to this many images),
``prompt_preset``, ``temperature``, ``text_normalisation`` (:mod:`fsad.text.prompt_params`). ``ctx.model`` holds the fitted text maps.

Columns: ``score`` (A), ``s_p``, ``s_n``, ``s_text`` and, when the generator personalized under a fixed prompt too,
``s_p_fixed`` (S_P against that image) and ``score_fixed`` (A with it): the prompt ablation; and
``branches:s_p+s_n`` etc., each pair of branches with the instance's weights: the branch ablation. ``ScoreResult.extra``
holds the memory's make-up and each test image's personalized file, prompt and SSIM (for the report's gallery).
"""

from __future__ import annotations

import pandas as pd
import torch

from fsad.diffusion.image_sets import FIXED_SUFFIX, pool_generated_ids
from fsad.maps import concat_numpy, upsample
from fsad.scorers.base import ScoreResult, ScoringContext
from fsad.scorers.one_to_normal.torch_model import BRANCHES, TextMaps, branch_pair_columns, build_memory, combine, image_score, position_distances, triplet_scores
from fsad.text.prompt_params import class_text_embeddings, prompt_temperature

NAME = "one_to_normal"


def _memory(ctx: ScoringContext, levels: list[int]) -> tuple[dict[int, torch.Tensor], dict[str, int]]:
    """Level -> normalised memory of the references and the first generated pool images, up to ``memory_size`` images."""
    refs = ctx.features(ctx.split.normal_refs)
    generated = pool_generated_ids(ctx.generated_pool.index)[: max(0, ctx.params["memory_size"] - len(ctx.split.normal_refs))]
    parts = [refs] + ([ctx.generated_pool.features(generated)] if generated else [])
    for part in parts:
        part.require(layers=levels)
    memory = {l: build_memory(torch.cat([part.layers[l] for part in parts])) for l in levels}
    return memory, {"references": len(ctx.split.normal_refs), "generated": len(generated)}


def score(ctx: ScoringContext) -> ScoreResult:
    """Score ``ctx.split.test`` with the triplet score (needs the generator's pool and personalized images)."""
    if ctx.generated_pool is None or ctx.personalized is None:
        raise ValueError(f"{NAME} reads its generator's pool and personalized images; the score job got none (check Method.generated)")
    params = ctx.params
    levels = list(params["layers"])
    temperature = prompt_temperature(params)
    text = class_text_embeddings(params, ctx.text_encoder, ctx.class_name, ctx.device)
    text_maps = TextMaps.from_tensors(ctx.model).to(ctx.device).requires_grad_(False)
    memory, make_up = _memory(ctx, levels)
    personalized_index = ctx.personalized.index.set_index("image_id")
    with_fixed = "fixed_file" in personalized_index.columns and bool((personalized_index["fixed_file"] != "").all())

    columns: dict[str, list[torch.Tensor]] = {}
    maps = []
    for features in ctx.test_batches([]):
        features.require(layers=levels)
        query = {l: features.layers[l] for l in levels}
        personalized = ctx.personalized.features(features.image_ids)
        out = triplet_scores(query, {l: personalized.layers[l] for l in levels}, memory, text_maps, text, temperature)
        values = {"score": combine(out.scores, params["alpha"], params["beta"]), **out.scores}
        if with_fixed:
            fixed = ctx.personalized.features([f"{i}{FIXED_SUFFIX}" for i in features.image_ids])
            s_p_fixed = image_score(torch.stack([position_distances(query[l], fixed.layers[l]) for l in levels], dim=1))
            values |= {"s_p_fixed": s_p_fixed, "score_fixed": combine({**out.scores, "s_p": s_p_fixed}, params["alpha"], params["beta"])}
        for name, value in values.items():
            columns.setdefault(name, []).append(value)
        grid = features.grid
        combined = combine(out.maps, params["alpha"], params["beta"]).reshape(-1, grid, grid)
        maps.append(upsample(combined, ctx.map_size))

    frame = pd.DataFrame({"image_id": list(ctx.split.test), **{name: concat_numpy(parts) for name, parts in columns.items()}})
    frame = frame.assign(**branch_pair_columns({b: frame[b].to_numpy() for b in BRANCHES}, params["alpha"], params["beta"]))
    shown = personalized_index.loc[list(ctx.split.test)]
    extra = {
        "memory": make_up,
        "alpha": params["alpha"],
        "beta": params["beta"],
        "personalized": {
            image_id: {"file": row.file, "prompt": row.prompt, "ssim": float(row.ssim), "fixed_file": row.fixed_file if with_fixed else ""}
            for image_id, row in zip(shown.index, shown.itertuples())
        },
    }
    return ScoreResult(frame, concat_numpy(maps), extra)
