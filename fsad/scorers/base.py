"""The common scorer interface and registry.

A scorer is a function ``score(ctx: ScoringContext) -> ScoreResult`` registered under a name with
:func:`register_scorer`. The orchestration in :mod:`fsad.scorers.run` builds the context from the
split, manifest and feature cache files, calls the scorer and writes the scores parquet and maps HDF5.
Scorers never read config files or global state: everything arrives in the context.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import numpy as np
import pandas as pd
import torch

from fsad.data.splits import Split
from fsad.features.types import FeatureBatch


# Test images scored per step; bounds the (images, positions, memory) similarity tensors of a scorer.
IMAGES_PER_STEP = 64


@dataclass
class ScoringContext:
    """Everything a scorer may use for one (dataset, category, setting, run).

    Attributes:
        split: reference, validation and test image ids.
        manifest: the category's manifest rows, indexed by ``image_id``.
        features: callable returning the cached features of the given ids (on ``device``).
        text_encoder: callable mapping a list of prompts to ``(N, D)`` un-normalised text embeddings
            of the same backbone as the features (loaded lazily, only if a scorer asks).
        class_name: the object name used in prompts (``metal nut`` for ``metal_nut``).
        params: the scorer's own config entry.
        map_size: side of the anomaly maps the scorer returns (evaluation resolution).
        device: where to compute.
        seed: derived from (config seed, dataset, category, setting, run).
    """

    split: Split
    manifest: pd.DataFrame
    features: Callable[[list[str]], FeatureBatch]
    text_encoder: Callable[[list[str]], torch.Tensor]
    class_name: str
    params: dict[str, Any]
    map_size: int
    device: torch.device
    seed: int
    extra: dict[str, Any] = field(default_factory=dict)

    def test_batches(self, window_sizes: list[int], scorer: str) -> Iterator[FeatureBatch]:
        """The test images' features in steps of :data:`IMAGES_PER_STEP`, each checked to hold ``window_sizes``."""
        if not self.split.test:
            raise ValueError(f"split {self.split.label} has no test images; check the dataset's manifest and max_test_per_category")
        for start in range(0, len(self.split.test), IMAGES_PER_STEP):
            features = self.features(self.split.test[start : start + IMAGES_PER_STEP])
            features.require_windows(window_sizes, scorer)
            yield features


@dataclass
class ScoreResult:
    """Scores of the test images.

    Attributes:
        scores: one row per test image: ``image_id``, ``score`` and one column per sub-score.
        maps: ``(N, map_size, map_size)`` anomaly maps in the row order of ``scores``, or None
            when the scorer gives image scores only.
        extra: JSON-serialisable details the orchestration saves beside the scores (e.g. the
            anomalous-memory scorer's memory choices and weight validation).
    """

    scores: pd.DataFrame
    maps: np.ndarray | None = None
    extra: dict[str, Any] = field(default_factory=dict)


Scorer = Callable[[ScoringContext], ScoreResult]
SCORERS: dict[str, Scorer] = {}


def register_scorer(name: str) -> Callable[[Scorer], Scorer]:
    def wrap(fn: Scorer) -> Scorer:
        SCORERS[name] = fn
        return fn

    return wrap


def get_scorer(name: str) -> Scorer:
    import fsad.scorers.registry  # noqa: F401  (registers the built-in scorers)

    try:
        return SCORERS[name]
    except KeyError:
        raise ValueError(f"unknown scorer {name!r}; known scorers: {sorted(SCORERS)}") from None
