"""Run one fit job: build the fit context from its files, call the method's fit, write ``models/{scorer}/{fit_key}/``.

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

from fsad.data.manifest import read_manifest
from fsad.data.splits import pool_image_ids, read_split
from fsad.io import atomic_path, read_json, write_json
from fsad.provenance import environment
from fsad.scorers.base import FitContext, FitResult, TrainingCategory
from fsad.scorers.method import resolve
from fsad.scorers.registry import load_method
from fsad.scorers.run import BackboneSession
from fsad.seeding import derive_seed

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CategoryFiles:
    """The files of one category a fit reads: its manifest, its pool (which images have features) and feature store."""

    dataset: str
    category: str
    manifest: str | Path
    pool: str | Path
    features_store: str | Path


def _training_category(files: CategoryFiles, class_name: str, device: torch.device, reader: str) -> TrainingCategory:
    from fsad.features.cache import FeatureStore
    from fsad.features.types import read_by

    store = FeatureStore(files.features_store)
    return TrainingCategory(
        dataset=files.dataset,
        category=files.category,
        image_ids=pool_image_ids(read_json(files.pool)),
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


def run_fit(
    scorer: str,
    *,
    method_module: str,
    fit_key: str,
    categories: list[CategoryFiles],
    split_path: str | Path | None,
    text_cache_dir: str | Path,
    backbone_spec: dict[str, Any],
    fit_params: dict[str, Any],
    weights_fallback: str,
    seed: int,
    device: torch.device,
    out_model: str | Path,
    out_info: str | Path,
) -> dict[str, Any]:
    """Fit scorer instance ``scorer`` on ``categories`` (and the run's split for scope ``run``); write the artifact.

    Args:
        fit_key: the fit's scope as named in its path (``{dataset}/{category}/{setting}/run{run}`` or a training dataset).
        fit_params: the instance's fit parameters, defaults filled in.
        seed: the config seed; the fit's own is derived from (seed, scorer, fit_key).
    """
    from safetensors.torch import save_file

    from fsad.features.cache import FeatureStore
    from fsad.features.types import read_by

    method = load_method(method_module)
    reader = f"scorers.{scorer} (fit)"
    if method.fit is None:
        raise ValueError(f"method {method.name!r} declares no fit, so scorer {scorer!r} has nothing to fit")
    stores = {str(files.features_store): FeatureStore(files.features_store).weights for files in categories}
    if len(set(stores.values())) != 1:
        raise ValueError(f"the feature stores of fit {scorer}/{fit_key} hold features of different weights: {stores}; delete the stale ones and rerun")
    weights = next(iter(stores.values()))
    session = BackboneSession(backbone_spec, weights, text_cache_dir, weights_fallback, seed, device)
    ctx = FitContext(
        params=fit_params,
        categories=[_training_category(files, method.prompt_class_name(fit_params, files.category), device, reader) for files in categories],
        split=read_split(split_path) if split_path is not None else None,
        text_encoder=lambda prompts: session.text_encoder(prompts),
        device=device,
        seed=derive_seed(seed, "fit", scorer, fit_key),
        backbone=lambda: session.backbone,
        # Lazy: only a fit that encodes images evaluates its method's features() on the fit parameters.
        encode_images=read_by(lambda images: session.image_encoder(method.features(fit_params))(images), reader),
    )
    started = time.perf_counter()
    result: FitResult = resolve(method.fit.run)(ctx)
    seconds = time.perf_counter() - started
    _check_result(result, scorer)

    with atomic_path(out_model) as tmp:
        save_file({name: t.detach().float().cpu().contiguous() for name, t in result.tensors.items()}, str(tmp), metadata={"scorer": scorer, "fit_key": fit_key})
    info = {
        "scorer": scorer,
        "method": method.name,
        "fit_key": fit_key,
        "scope": method.fit.scope,
        "parameters": fit_params,
        "loss_per_epoch": [round(float(loss), 6) for loss in result.losses],
        "seconds": round(seconds, 3),
        "weights": weights,
        "environment": environment(),
        "device": str(device),
        "trained_on": [f"{c.dataset}/{c.category}" for c in categories],
        "tensors": {name: list(t.shape) for name, t in result.tensors.items()},
        "details": result.details,
    }
    write_json(out_info, info)
    log.info("fit %s/%s in %.1f s, final loss %s", scorer, fit_key, seconds, info["loss_per_epoch"][-1:] or "n/a")
    return info
