"""What scorers and fits receive and return.

A method's score step is a function ``score(ctx: ScoringContext) -> ScoreResult``; its fit step, if it has
one, ``fit(ctx: FitContext) -> FitResult``; its report, if it has one, ``write(ctx: ReportContext) -> list[Path]`` (a :class:`fsad.scorers.method.ReportContext`). Both are named in the method's declaration
(:mod:`fsad.scorers.method`). The orchestration in :mod:`fsad.scorers.run` and :mod:`fsad.scorers.fit`
builds the contexts from the job's files and writes the results; methods never read files or the config.
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
class GeneratedImages:
    """Images a generator made for one run (its pool, or its personalized test images) and their cached features.

    Attributes:
        index: the directory's ``index.csv`` rows (:mod:`fsad.diffusion.image_sets`), ``file`` columns as absolute paths.
        features: cached features of the given ids, on the scoring device (pool: generated image ids; personalized:
            test image ids, and ``f"{image_id}#fixed"`` for the fixed-prompt images).
    """

    index: pd.DataFrame
    features: Callable[[list[str]], FeatureBatch]


@dataclass
class MemberScores:
    """What one member instance of a fusion scored on the same (dataset, category, setting, run).

    Attributes:
        test: its score file's rows (``image_id``, ``label``, ``score``, ...), in the split's test order.
        test_maps: ``(N, S, S)`` its anomaly maps of those images, or None when it gives none.
        validation_ids: the labelled validation set's images (:mod:`fsad.fusion.validation_set`).
        validation_labels: ``(V,)`` their labels, 0 normal / 1 anomalous.
        validation_scores: ``(V,)`` its scores of them.
        validation_maps: ``(V, S, S)`` its maps of them, or None.
    """

    test: pd.DataFrame
    test_maps: np.ndarray | None
    validation_ids: list[str]
    validation_labels: np.ndarray
    validation_scores: np.ndarray
    validation_maps: np.ndarray | None


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
        encode_images: encodes images that are not in the feature store (e.g. augmentations) with the
            same backbone, ``list[PIL.Image] -> FeatureBatch`` holding the window sizes the scorer declared.
        model: the tensors of the instance's fit (``models/{scorer}/{fit_key}/model.safetensors``), on
            ``device``; empty for methods without a fit.
        backbone: loads (once) the :class:`~fsad.backbones.loading.Backbone` the features came from, for
            methods that run its towers themselves (learned prompts through the text encoder, ``visual.proj``
            of cached layer tokens); jobs that never call it never build the model.
        generated_pool, personalized: the run's generated images (a generator's pool, not the split's reference
            pools), when the method declares it reads them (``Method.generated``).
        input_size: side of the backbone's (square) input images in pixels, where maps are made at input resolution.
        members: instance -> what it scored, for a method that declares members (``Method.members``), in their order.
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
    encode_images: Callable[[list[Any]], FeatureBatch] | None = None
    model: dict[str, torch.Tensor] = field(default_factory=dict)
    backbone: Callable[[], Any] | None = None
    generated_pool: GeneratedImages | None = None
    personalized: GeneratedImages | None = None
    input_size: int | None = None
    members: dict[str, MemberScores] = field(default_factory=dict)

    def _generated_ids(self, generated: int | None) -> list[str]:
        from fsad.diffusion.image_sets import pool_generated_ids

        return pool_generated_ids(self.generated_pool.index)[:generated] if self.generated_pool is not None else []

    def generated_features(self, generated: int | None = None) -> FeatureBatch | None:
        """Features of the first ``generated`` generated images of the run's pool (all when None), in pool order; None
        when the method reads no pool (for memories that are not built from the split's normal references)."""
        return None if self.generated_pool is None else self.generated_pool.features(self._generated_ids(generated))

    def reference_features(self, generated: int | None = None) -> FeatureBatch:
        """The split's normal references' features, followed by those of the first ``generated`` generated images of
        the run's pool (all when None; none when the method reads no pool), in pool order (One-to-Normal's transfer)."""
        references = self.features(self.split.normal_refs)
        if self.generated_pool is None:
            return references
        return FeatureBatch.concat([references, self.generated_pool.features(self._generated_ids(generated))])

    def reference_files(self, generated: int | None = None) -> list[str]:
        """The image files of :meth:`reference_features`' rows, in the same order."""
        files = dict(zip(self.generated_pool.index["image_id"], self.generated_pool.index["file"])) if self.generated_pool is not None else {}
        return [str(self.manifest.loc[i, "image_path"]) for i in self.split.normal_refs] + [files[i] for i in self._generated_ids(generated)]

    def test_batches(self, window_sizes: list[int]) -> Iterator[FeatureBatch]:
        """The test images' features in steps of :data:`IMAGES_PER_STEP`, each checked to hold ``window_sizes``."""
        if not self.split.test:
            raise ValueError(f"split {self.split.label} has no test images; check the dataset's manifest and max_test_per_category")
        for start in range(0, len(self.split.test), IMAGES_PER_STEP):
            features = self.features(self.split.test[start : start + IMAGES_PER_STEP])
            features.require(window_sizes=window_sizes)
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


@dataclass
class TrainingCategory:
    """One category a fit learns from: the images with cached features and how to read them.

    Attributes:
        image_ids: the category's images in the feature store (its test subset and reference pools).
        manifest: the category's manifest rows, indexed by ``image_id`` (labels, mask paths).
        features: cached features of the given ids (on the fit's device).
        class_name: the object name used in prompts.
    """

    dataset: str
    category: str
    image_ids: list[str]
    manifest: pd.DataFrame
    features: Callable[[list[str]], FeatureBatch]
    class_name: str


@dataclass
class FitContext:
    """Everything a fit may use.

    Attributes:
        params: the instance's fit parameters (those its method declares as fit parameters), defaults filled in.
        categories: what the fit learns from: the run's category (scope ``run``) or every category of the
            training dataset (scope ``dataset``).
        split: the run's split (scope ``run``: references, validation images), else None.
        text_encoder: prompts -> ``(N, D)`` un-normalised text embeddings of the features' backbone.
        device: where to compute.
        seed: derived from (config seed, scorer, fit key).
        backbone: loads (once) the backbone the features came from (see :class:`ScoringContext`).
        encode_images: encodes images that are not in the feature store (e.g. synthetic anomalies made from the
            references) with the same backbone, ``list[PIL.Image] -> FeatureBatch`` holding what the method's
            ``features(fit params)`` declares (see :class:`ScoringContext`).
    """

    params: dict[str, Any]
    categories: list[TrainingCategory]
    split: Split | None
    text_encoder: Callable[[list[str]], torch.Tensor]
    device: torch.device
    seed: int
    backbone: Callable[[], Any] | None = None
    encode_images: Callable[[list[Any]], FeatureBatch] | None = None


@dataclass
class FitResult:
    """What a fit learned.

    Attributes:
        tensors: name -> tensor, saved as ``model.safetensors`` and given back to score jobs as ``ctx.model``.
        losses: training loss per epoch, in order.
        details: JSON-serialisable facts saved in ``fit.json`` (e.g. steps, learning rate schedule).
    """

    tensors: dict[str, torch.Tensor]
    losses: list[float] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)

