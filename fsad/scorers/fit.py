"""Run one fit job: build the fit context from its files, call the method's fit, write ``models/{scorer}/{scope}/``.

The artifact is ``model.safetensors`` (the learned tensors) and ``fit.json`` (parameters, loss per epoch,
seconds, weights provenance, the software versions: :func:`fsad.provenance.environment`). Both are written atomically, the tensors first, so a killed job never leaves
a ``fit.json`` that describes tensors which are not there.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from fsad.backbones.session import BackboneSession
from fsad.data.manifest import read_manifest
from fsad.data.splits import pool_image_ids, read_split
from fsad.io import atomic_path, read_json, write_json
from fsad.provenance import environment
from fsad.scorers.base import FitContext, FitResult, TrainingCategory
from fsad.scorers.method import resolve
from fsad.scorers.registry import load_method
from fsad.seeding import derive_seed

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CategoryFiles:
    """The files of one category a fit reads: its manifest, its reference pool (``pool.json``: which images have
    features; not a generator's pool) and its feature store."""

    dataset: str
    category: str
    manifest: str | Path
    reference_pool: str | Path
    features_store: str | Path


def _training_category(files: CategoryFiles, class_name: str, device: torch.device, reader: str) -> TrainingCategory:
    from fsad.features.store import FeatureStore
    from fsad.features.types import read_by

    store = FeatureStore(files.features_store)
    return TrainingCategory(
        dataset=files.dataset,
        category=files.category,
        image_ids=pool_image_ids(read_json(files.reference_pool)),
        manifest=read_manifest(files.manifest, files.category).set_index("image_id", drop=False),
        features=read_by(lambda ids: store.load(ids, device=device), reader),
        class_name=class_name,
    )


def _check_result(result: FitResult, scorer: str) -> None:
    if not result.tensors:
        raise RuntimeError(f"the fit of scorer {scorer!r} returned no tensors")
    bad = [name for name, tensor in result.tensors.items() if not torch.isfinite(tensor).all()]
    if bad:
        raise RuntimeError(f"the fit of scorer {scorer!r} learned non-finite values in {bad}; lower its learning rate or check its inputs")


@dataclass(frozen=True)
class FitScope:
    """What one fit covers: a training dataset (dataset scope), or one run of a category (run scope)."""

    dataset: str
    category: str | None = None
    setting: str | None = None
    run: int | None = None

    @property
    def kind(self) -> str:
        return "dataset" if self.category is None else "run"

    @property
    def path(self) -> str:
        """The scope as its model folder below ``models/{scorer}/`` names it (also the fit's seed and log label)."""
        return self.dataset if self.category is None else f"{self.dataset}/{self.category}/{self.setting}/run{self.run}"

    def as_dict(self) -> dict[str, Any]:
        return {key: value for key, value in self.__dict__.items() if value is not None}


@dataclass(frozen=True)
class FitJob:
    """One fit job, as rules/fit.smk declares it (workflow_scripts/fit.py builds it from the rule).

    Attributes:
        scorer: the instance's name; method_module: the module declaring its method.
        scope: the dataset or run the fit covers, from the rule's wildcards.
        categories: the files of each category it learns from; split_path: the run's split (run scope only).
        text_cache_dir, backbone_spec: the prompt-embedding cache and network of the instance's backbone.
        fit_params: the instance's fit parameters, defaults filled in.
        weights_fallback, seed: the config's; the fit's own seed is derived from (seed, scorer, scope).
        out_model, out_info: the ``model.safetensors`` and ``fit.json`` it writes.
    """

    scorer: str
    method_module: str
    scope: FitScope
    categories: list[CategoryFiles]
    split_path: str | Path | None
    text_cache_dir: str | Path
    backbone_spec: dict[str, Any]
    fit_params: dict[str, Any]
    weights_fallback: str
    seed: int
    out_model: str | Path
    out_info: str | Path


def run_fit(job: FitJob, device: torch.device | str) -> dict[str, Any]:
    """Fit the job's scorer instance on its categories (and the run's split for scope ``run``); write the artifact."""
    from safetensors.torch import save_file

    from fsad.features.store import FeatureStore
    from fsad.features.types import read_by

    scorer, fit_params, scope, device = job.scorer, job.fit_params, job.scope, torch.device(device)
    method = load_method(job.method_module)
    reader = f"scorers.{scorer} (fit)"
    if method.fit is None:
        raise ValueError(f"method {method.name!r} declares no fit, so scorer {scorer!r} has nothing to fit")
    if method.fit.scope != scope.kind:
        raise ValueError(f"method {method.name!r} fits one model per {method.fit.scope}, but the fit job of {scorer!r} covers the {scope.kind} {scope.path}")
    stores = {str(files.features_store): FeatureStore(files.features_store).weights for files in job.categories}
    if len(set(stores.values())) != 1:
        raise ValueError(f"the feature stores of fit {scorer}/{scope.path} hold features of different weights: {stores}; delete the stale ones and rerun")
    weights = next(iter(stores.values()))
    session = BackboneSession(job.backbone_spec, weights, job.text_cache_dir, job.weights_fallback, job.seed, device)
    ctx = FitContext(
        params=fit_params,
        categories=[_training_category(files, method.prompt_class_name(fit_params, files.category), device, reader) for files in job.categories],
        split=read_split(job.split_path) if job.split_path is not None else None,
        text_encoder=lambda prompts: session.text_encoder(prompts),
        device=device,
        seed=derive_seed(job.seed, "fit", scorer, scope.path),
        backbone=lambda: session.backbone,
        # Lazy: only a fit that encodes images evaluates its method's features() on the fit parameters.
        encode_images=read_by(lambda images: session.image_encoder(method.features(fit_params))(images), reader),
    )
    started = time.perf_counter()
    result: FitResult = resolve(method.fit.run)(ctx)
    seconds = time.perf_counter() - started
    _check_result(result, scorer)

    with atomic_path(job.out_model) as tmp:
        save_file({name: t.detach().float().cpu().contiguous() for name, t in result.tensors.items()}, str(tmp), metadata={"scorer": scorer, "scope": scope.path})
    info = {
        "scorer": scorer,
        "method": method.name,
        "scope": scope.kind,
        "fit_for": scope.as_dict(),
        "parameters": fit_params,
        "loss_per_epoch": [round(float(loss), 6) for loss in result.losses],
        "seconds": round(seconds, 3),
        "weights": weights,
        "environment": environment(),
        "device": str(device),
        "trained_on": [f"{c.dataset}/{c.category}" for c in job.categories],
        "tensors": {name: list(t.shape) for name, t in result.tensors.items()},
        "details": result.details,
    }
    write_json(job.out_info, info)
    log.info("fit %s/%s in %.1f s, final loss %s", scorer, scope.path, seconds, info["loss_per_epoch"][-1:] or "n/a")
    return info
