"""The score step of ``devprompt``: the fitted prompts (``ctx.model``) against the test images' cached tokens.

With the deviation loss (DevPrompt), the anomaly map is the patch deviation ``|s(p) - mu| / sigma`` and the image
score the mean of the Top-K patch deviations (DevPrompt Algorithm 1 returns ``D(x)``); sub-scores ``deviation_max``
(largest patch deviation), ``textual_max`` and ``textual_global`` (PromptAD's readouts of the same prompts).
Without it (PromptAD), the map is PromptAD's softmax of the abnormal prompt per patch and the image score its
softmax for the class-token embedding (``textual_global``, with the image-level prompts of ``cls_prompts`` when it is
set); sub-score ``textual_max``. With ``memory_blocks`` (full PromptAD) the visual memory's map ``V`` joins the textual
map ``T``: the map is ``1 / (1 / T + 1 / V)`` on the patch grid, the image score
``1 / (1 / max V + 1 / textual_global)`` with ``max V`` taken on the upsampled, unsmoothed visual map (PromptAD's
``metric_cal_img`` on its ``cls`` maps); sub-scores ``textual_global``, ``textual_max`` and ``visual_max`` keep the
branches apart. With ``generator`` set, the run's pool's generated images (``generated_references`` of them, all when
null) join each block's gallery after the normal shots' (One-to-Normal's transfer).
Maps are upsampled bilinearly to ``ctx.map_size`` and smoothed with PromptAD's Gaussian (``smoothing_sigma``).
"""

from __future__ import annotations

import pandas as pd
import torch

from fsad.features.projection import project_tokens
from fsad.maps import concat_numpy, smooth, upsample
from fsad.scorers.base import ScoreResult, ScoringContext
from fsad.scorers.devprompt.deviation import top_k_count
from fsad.scorers.devprompt.torch_model import devprompt_scores, harmonic_fusion, memory_gallery, patch_tokens, textual_anomaly, visual_anomaly


def score(ctx: ScoringContext) -> ScoreResult:
    """Score ``ctx.split.test`` with the instance's fitted prompts."""
    params, model = ctx.params, ctx.model
    vv_block = params["vv_block"]
    prototypes, logit_scale = model["text_prototypes"], model["logit_scale"]
    cls_prototypes = model["cls_text_prototypes"] if params["cls_prompts"] is not None else prototypes
    memory_blocks = params["memory_blocks"]
    galleries = [model[f"memory_{n}"] for n in memory_blocks]
    generated = ctx.generated_features(params["generated_references"])
    if generated is not None:
        generated.require(mid_layers=memory_blocks)
        galleries = [torch.cat([gallery, memory_gallery(generated.mid_layers[n]).to(gallery.device)]) for gallery, n in zip(galleries, memory_blocks)]
    columns: dict[str, list[torch.Tensor]] = {}
    maps = []
    for features in ctx.test_batches([]):
        features.require(vv_layers=[] if vv_block is None else [vv_block], mid_layers=memory_blocks)
        patches = project_tokens(patch_tokens(features, vv_block), model["visual_proj"])
        grid = features.grid
        textual = textual_anomaly(patches, prototypes, logit_scale)
        step = {
            "textual_global": textual_anomaly(features.image_embeddings.float(), cls_prototypes, logit_scale),
            "textual_max": textual.amax(dim=-1),
        }
        if params["deviation_loss"]:
            k = top_k_count(patches.shape[1], params["topk_ratio"])
            out = devprompt_scores(
                patches, prototypes, model["log_scale"], model["bias"], model["reference_mean"], model["reference_std"], k, params["deviation_score"]
            )
            step = {"score": out.image_deviation, "deviation_max": out.deviations.amax(dim=-1), **step}
            patch_map = out.deviations
        elif memory_blocks:
            visual = visual_anomaly([features.mid_layers[n] for n in memory_blocks], galleries)
            visual_max = upsample(visual.reshape(-1, grid, grid), ctx.map_size).amax(dim=(1, 2))
            step = {"score": harmonic_fusion(step["textual_global"], visual_max), **step, "visual_max": visual_max}
            patch_map = harmonic_fusion(textual, visual)
        else:
            step = {"score": step["textual_global"], **step}
            patch_map = textual
        for name, values in step.items():
            columns.setdefault(name, []).append(values)
        maps.append(upsample(patch_map.reshape(-1, grid, grid), ctx.map_size))

    frame = pd.DataFrame({"image_id": list(ctx.split.test), **{name: concat_numpy(parts) for name, parts in columns.items()}})
    extra = {"gallery_sizes": {str(n): int(len(g)) for n, g in zip(memory_blocks, galleries)}, "generated_references": [] if generated is None else list(generated.image_ids)}
    return ScoreResult(frame, smooth(concat_numpy(maps), params["smoothing_sigma"]), extra)
