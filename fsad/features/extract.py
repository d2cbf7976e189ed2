"""Entry point of the extract_features stage: load the backbone, grow the category's feature store."""

from __future__ import annotations

import logging
from collections.abc import Collection
from pathlib import Path
from typing import Any

import torch

from fsad.backbones.loading import load_backbone
from fsad.features.cache import FeatureCache

log = logging.getLogger(__name__)


def extract_category(
    *,
    backbone_spec: dict[str, Any],
    backbone_name: str,
    image_paths: dict[str, str],
    cache_path: str | Path,
    window_sizes: list[int],
    batch_size: int,
    device: torch.device | str,
    weights_fallback: str,
    seed: int,
    threads: int = 1,
    layers: Collection[int] = (),
    vv_layers: Collection[int] = (),
) -> dict[str, Any]:
    """Encode the images of ``image_paths`` missing from the store at ``cache_path``, and the window sizes,
    layers and V-V layers (1-based blocks) missing from the images it holds; return a summary.

    The new features go to one new shard of the store, in the spec's ``storage_dtype`` (float16 unless
    it says float32). A store never mixes weights or dtypes: if the weights loaded now differ from the
    store's (random fallback then, pretrained now), :meth:`FeatureCache.update` stops and says to delete the store.

    On a GPU, ``threads - 1`` worker processes decode images ahead of the encoder; on the CPU every
    core is busy encoding, so images are decoded in this process.
    """
    backbone = load_backbone(backbone_spec, device, weights_fallback, seed)
    workers = max(0, threads - 1) if backbone.device.type == "cuda" else 0
    summary = FeatureCache(cache_path).update(
        backbone, image_paths, window_sizes, batch_size, workers, layers=layers, vv_layers=vv_layers
    )
    log.info("%s: %s", backbone_name, summary)
    return {"backbone": backbone_name, "device": str(backbone.device), **summary}


def extract_with_rule_params(params: Any, **job: Any) -> dict[str, Any]:
    """:func:`extract_category` with the settings both feature rules pass as ``params`` (``backbone``, ``window_sizes``,
    ``layers``, ``vv_layers``, ``weights_fallback``, ``seed``); ``job`` gives the rest (backbone_name, image_paths,
    cache_path, device, threads)."""
    return extract_category(
        backbone_spec=params.backbone,
        batch_size=params.backbone["batch_size"],
        window_sizes=params.window_sizes,
        layers=params.layers,
        vv_layers=params.vv_layers,
        weights_fallback=params.weights_fallback,
        seed=params.seed,
        **job,
    )
