"""The backbone of a score or fit job, built only when the job has something to encode."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Protocol

import torch


class FeaturesWanted(Protocol):
    """What to encode an image into (a method's declared feature needs)."""

    window_sizes: Collection[int]
    layers: Collection[int]
    vv_layers: Collection[int]
    mid_layers: Collection[int]


@dataclass
class BackboneSession:
    """The backbone behind a feature store, loaded only when a job needs to encode something.

    Prompt embeddings are memoised in ``text_cache_dir`` (shared by every job of the backbone), so a job
    whose prompts are cached never builds the model. The text tower is rebuilt with the store's weights,
    so text and image features always come from the same model.
    """

    spec: dict[str, Any]
    weights: str
    text_cache_dir: str | Path
    weights_fallback: str
    seed: int
    device: torch.device

    @cached_property
    def backbone(self):
        from fsad.backbones.loading import load_backbone

        return load_backbone(self.spec, self.device, self.weights_fallback, self.seed, weights=self.weights)

    @cached_property
    def text_encoder(self):
        from fsad.backbones.spec import canonical_spec
        from fsad.text.cache import cached_text_encoder

        return cached_text_encoder(lambda prompts: self.backbone.encode_text(prompts), self.text_cache_dir, [canonical_spec(self.spec), self.weights])

    def image_encoder(self, needs: FeaturesWanted):
        """``list[PIL.Image] -> FeatureBatch`` holding what ``needs`` names, for images outside the feature store."""
        def encode(images: list) -> Any:
            pixels = torch.stack([self.backbone.preprocess(img.convert("RGB")) for img in images]).to(self.device)
            return self.backbone.encode(
                pixels, list(needs.window_sizes), layers=needs.layers, vv_layers=needs.vv_layers, mid_layers=needs.mid_layers
            )

        return encode
