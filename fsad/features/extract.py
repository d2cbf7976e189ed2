"""Entry point of the extract_features stage: load the backbone, grow the category's feature store."""

from __future__ import annotations

import logging
from collections.abc import Collection
from pathlib import Path
from typing import Any

import torch

from fsad.backbones.loading import load_backbone
from fsad.features.cache import FeatureStore

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
    workers: int | None = None,
) -> dict[str, Any]:
    """Encode the images of ``image_paths`` missing from the store at ``cache_path``, and the window sizes,
    layers and V-V layers (1-based blocks) missing from the images it holds; return a summary.

    The new features go to one new shard of the store, in the spec's ``storage_dtype`` (float16 unless
    it says float32). A store never mixes weights or dtypes: if the weights loaded now differ from the
    store's (random fallback then, pretrained now), :meth:`FeatureStore.update` stops and says to delete the store.

    ``workers`` processes decode images ahead of the encoder; by default ``threads - 1`` on a GPU, none on the CPU
    (there every core is busy encoding, so images are decoded in this process). Batch size and workers are run
    settings: the summary records them, but they are no part of the store's key.
    """
    backbone = load_backbone(backbone_spec, device, weights_fallback, seed)
    if workers is None:
        workers = max(0, threads - 1) if backbone.device.type == "cuda" else 0
    summary = FeatureStore(cache_path).update(
        backbone, image_paths, window_sizes, batch_size, workers, layers=layers, vv_layers=vv_layers
    )
    log.info("%s: %s", backbone_name, summary)
    return {"backbone": backbone_name, "device": str(backbone.device), "batch_size": batch_size, "workers": workers, **summary}


def extract_with_rule_params(params: Any, config: dict[str, Any], **job: Any) -> dict[str, Any]:
    """:func:`extract_category` with the numbers both feature rules pass as ``params`` (``backbone``, ``window_sizes``,
    ``layers``, ``vv_layers``, ``weights_fallback``, ``seed``), the backbone's run settings (batch size, workers) from
    the workflow ``config`` (no param: changing them reruns nothing); ``job`` gives the rest (backbone_name, the
    backbone's directory name; image_paths, cache_path, device, threads)."""
    from fsad.backbones.spec import backbone_name, run_settings

    settings = run_settings(config, backbone_name(job["backbone_name"]))
    return extract_category(
        backbone_spec=params.backbone,
        batch_size=settings["batch_size"],
        workers=settings["workers"],
        window_sizes=params.window_sizes,
        layers=params.layers,
        vv_layers=params.vv_layers,
        weights_fallback=params.weights_fallback,
        seed=params.seed,
        **job,
    )
