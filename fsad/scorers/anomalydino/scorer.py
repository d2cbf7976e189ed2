"""The ``anomalydino`` scorer: the test images' DINOv2 patch tokens against a memory of the references' tokens.

Params (``schema.yaml`` beside this module, defaults filled in): ``rotations``, ``masking``, ``mask_threshold``,
``mask_references``, ``top_fraction``, ``sigma``, ``generated_references`` (with ``generator``: the pool's generated
images join the references). With ``rotations`` the references (pool images included) are rotated by 45, 90, ... 315
degrees as image files, mirrored at the corners, and encoded by the job's backbone (``ctx.encode_images``); their
unrotated tokens come from the store. Column ``max_distance``: the largest patch score.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torchvision.transforms.v2 import functional as TF

from fsad.data.augment import rotate_reflected
from fsad.data.images import read_image
from fsad.scorers.anomalydino.torch_model import ROTATIONS, anomaly_maps, foreground_masks, memory_bank, patch_distances, top_fraction_mean
from fsad.scorers.base import ScoreResult, ScoringContext

# Rotated references encoded at a time (8 shots make 56; at 672 px a ViT-S batch of 16 holds 37k tokens).
ROTATED_PER_BATCH = 16


def masks_category(masking: bool | list[str], category: str) -> bool:
    """Whether background masking applies to ``category``: ``masking`` is true, or a list that names it."""
    return masking if isinstance(masking, bool) else category in masking


def rotated(image: Image.Image, degrees: float) -> Image.Image:
    """``image`` rotated by ``degrees`` (:func:`fsad.data.augment.rotate_reflected`), rounded back to 8 bits."""
    pixels = rotate_reflected(TF.pil_to_tensor(image.convert("RGB")).float(), degrees)
    return TF.to_pil_image(pixels.round().clamp(0, 255).to(torch.uint8))


def _memory(ctx: ScoringContext, params: dict[str, Any], masking: bool) -> tuple[torch.Tensor, int]:
    """``(M, C)`` normalised memory (every reference's tokens, its rotations' with ``rotations``, foreground only when
    the references are masked) and the number of reference images."""
    references = ctx.reference_features(params["generated_references"])
    tokens = [references.patch_tokens.float()]
    if params["rotations"]:
        if ctx.encode_images is None:
            raise ValueError("anomalydino encodes its rotated references and needs ctx.encode_images")
        turned = [(image, angle) for image in map(read_image, ctx.reference_files(params["generated_references"])) for angle in ROTATIONS]
        for start in range(0, len(turned), ROTATED_PER_BATCH):
            images = [rotated(image, angle) for image, angle in turned[start : start + ROTATED_PER_BATCH]]
            tokens.append(ctx.encode_images(images).patch_tokens.to(ctx.device).float())
    tokens = torch.cat(tokens)
    if masking and params["mask_references"]:
        tokens = tokens[foreground_masks(tokens, references.grid, params["mask_threshold"])]
    return memory_bank(tokens), len(references.image_ids)


def score(ctx: ScoringContext) -> ScoreResult:
    """Score ``ctx.split.test`` against the memory of ``split.normal_refs`` (and the pool's generated images)."""
    params = ctx.params
    masking = masks_category(params["masking"], ctx.split.category)
    memory, references = _memory(ctx, params, masking)
    image_scores, maxima, maps, foreground = [], [], [], []
    for features in ctx.test_batches([]):
        distances = patch_distances(features.patch_tokens, memory)
        if masking:
            keep = foreground_masks(features.patch_tokens, features.grid, params["mask_threshold"])
            distances = distances * keep
            foreground.append(keep.float().mean(dim=1))
        image_scores.append(top_fraction_mean(distances, params["top_fraction"]))
        maxima.append(distances.amax(dim=1))
        maps.append(anomaly_maps(distances, features.grid, ctx.map_size, params["sigma"]))

    frame = pd.DataFrame({"image_id": list(ctx.split.test), "score": _numpy(image_scores), "max_distance": _numpy(maxima)})
    extra = {
        "memory": {"references": references, "tokens": len(memory), "rotations": [0, *ROTATIONS] if params["rotations"] else [0]},
        "masking": masking,
        "foreground_share": float(_numpy(foreground).mean()) if foreground else None,
    }
    return ScoreResult(frame, _numpy(maps), extra)


def _numpy(parts: list[torch.Tensor]) -> np.ndarray:
    return torch.cat(parts).float().cpu().numpy()
