"""The extract stage: encode images with a backbone, batch by batch, into a feature store.

:class:`ExtractJob` is one job of rules/features.smk or rules/diffusion.smk (its script builds it from the rule);
:func:`extract` loads the backbone and grows the job's store with what it lacks; :func:`batch_encoder` is the encode
loop (decode, preprocess, encode a batch at a time) that :meth:`FeatureStore.update` writes from.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from fsad.features.parts import Parts
from fsad.features.store import Encoder, FeatureStore
from fsad.features.types import FeatureBatch

if TYPE_CHECKING:
    from fsad.backbones.loading import Backbone
    from fsad.backbones.timm_models import TimmBackbone

log = logging.getLogger(__name__)


def encode_images(backbone: Backbone | TimmBackbone, pixels: torch.Tensor, window_sizes: list[int], **kwargs: Any) -> FeatureBatch:
    """The backbone's features of preprocessed images (``Backbone.encode``: open_clip's or timm's)."""
    return backbone.encode(pixels, window_sizes, **kwargs)


class _PreprocessedImages:
    """Images of ``paths`` in order, read and preprocessed (a map-style dataset a DataLoader can prefetch from)."""

    def __init__(self, paths: list[str], preprocess: Callable[[Any], torch.Tensor]):
        self.paths, self.preprocess = paths, preprocess

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> torch.Tensor:
        from fsad.data.images import read_image

        return self.preprocess(read_image(self.paths[index]))


def batch_encoder(backbone: Backbone, batch_size: int = 8, workers: int = 0) -> Encoder:
    """The store's encoder for ``backbone``: ``batch_size`` images at a time, decoded by ``workers`` processes ahead
    of the device (0: in this process; worth it on a GPU, where decoding would otherwise keep it waiting)."""

    def encode(paths: dict[str, str], parts: Parts, with_image: bool) -> Iterator[tuple[list[str], FeatureBatch]]:
        from torch.utils.data import DataLoader
        from tqdm import tqdm

        ids = list(paths)
        what = "images" if with_image else ", ".join(f"{name} {values}" for name, values in parts.as_dict().items() if values)
        batches = DataLoader(
            _PreprocessedImages([paths[i] for i in ids], backbone.preprocess),
            batch_size=batch_size,
            num_workers=workers,
            pin_memory=backbone.device.type == "cuda",
            # fork: the workers only decode images (no CUDA), and the preprocessing holds lambdas
            multiprocessing_context="fork" if workers else None,
        )
        for start, pixels in zip(range(0, len(ids), batch_size), tqdm(batches, desc=f"encoding {what}", unit="batch")):
            features = encode_images(
                backbone, pixels, list(parts.window_sizes), with_image=with_image, layers=list(parts.layers), vv_layers=list(parts.vv_layers),
                mid_layers=list(parts.mid_layers),
            )
            yield ids[start : start + batch_size], features

    return encode


def update_store(
    store: FeatureStore,
    backbone: Backbone,
    image_paths: dict[str, str],
    window_sizes: Collection[int],
    batch_size: int = 8,
    workers: int = 0,
    *,
    layers: Collection[int] = (),
    vv_layers: Collection[int] = (),
    mid_layers: Collection[int] = (),
) -> dict[str, Any]:
    """Grow ``store`` with what ``image_paths`` lack (:meth:`FeatureStore.update`), encoded by ``backbone``."""
    encoder = batch_encoder(backbone, batch_size, workers)
    return store.update(backbone, image_paths, window_sizes, encoder, layers=layers, vv_layers=vv_layers, mid_layers=mid_layers)


@dataclass(frozen=True)
class ExtractJob:
    """One feature job: encode ``image_paths`` into the store at ``store_path``.

    Attributes:
        backbone_key: the backbone's directory name (its config name and a hash of its network).
        backbone_spec: its network (the keys that change numbers); weights_fallback, seed: the config's.
        window_sizes, layers, vv_layers, mid_layers: what every image must hold (1-based blocks for layers).
        batch_size, workers: the backbone's run settings (they change no number, so they are no part of the store's key);
            ``workers`` None: ``threads - 1`` decoding processes on a GPU, none on the CPU (there every core encodes).
        threads: the job's threads.
    """

    backbone_key: str
    backbone_spec: dict[str, Any]
    image_paths: dict[str, str]
    store_path: str | Path
    window_sizes: list[int]
    layers: list[int]
    vv_layers: list[int]
    batch_size: int
    workers: int | None
    weights_fallback: str
    seed: int
    threads: int = 1
    mid_layers: list[int] = field(default_factory=list)


def rule_extract_job(smk: Any, image_paths: dict[str, str]) -> ExtractJob:
    """The :class:`ExtractJob` of a Snakemake feature job (``smk``: rule extract_features, extract_generated_features or
    inspect_features) for ``image_paths``."""
    from fsad.backbones.spec import backbone_name, run_settings

    return ExtractJob(
        backbone_key=smk.wildcards.backbone,
        backbone_spec=smk.params.backbone,
        image_paths=image_paths,
        store_path=smk.output.store,
        window_sizes=smk.params.window_sizes,
        layers=smk.params.layers,
        vv_layers=smk.params.vv_layers,
        mid_layers=smk.params.mid_layers,
        # batch size and workers change no number: read from the config, not params, so changing them reruns nothing
        **run_settings(smk.config, backbone_name(smk.wildcards.backbone)),
        weights_fallback=smk.params.weights_fallback,
        seed=smk.params.seed,
        threads=smk.threads,
    )


def extract(job: ExtractJob, device: torch.device | str) -> dict[str, Any]:
    """Encode the job's images missing from its store, and the parts missing from the images it holds; return a summary.

    The new features go to one new shard of the store, in the spec's ``storage_dtype`` (float16 unless it says
    float32). A store never mixes weights or dtypes: if the weights loaded now differ from the store's (random
    fallback then, pretrained now), :meth:`FeatureStore.update` stops and says to delete the store.
    """
    from fsad.backbones.loading import load_backbone

    backbone = load_backbone(job.backbone_spec, device, job.weights_fallback, job.seed)
    workers = job.workers
    if workers is None:
        workers = max(0, job.threads - 1) if backbone.device.type == "cuda" else 0
    summary = update_store(
        FeatureStore(job.store_path), backbone, job.image_paths, job.window_sizes, job.batch_size, workers, layers=job.layers, vv_layers=job.vv_layers,
        mid_layers=job.mid_layers,
    )
    log.info("%s: %s", job.backbone_key, summary)
    return {"backbone": job.backbone_key, "device": str(backbone.device), "batch_size": job.batch_size, "workers": workers, **summary}
