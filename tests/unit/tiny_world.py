"""A tiny benchmark world on disk for wiring tests: one category of textured images (anomalies with exact masks),
its manifest, pool, a split per setting and a feature store of the tiny CLIP made by the real extraction code.

Tests run the real orchestration (:func:`fsad.scorers.run.run_scorer`, :func:`fsad.scorers.fit.run_fit`) on it with
chosen parameters, so a value lost between the parameters and the maths shows in the outputs.

    world = build_world(tmp_path)
    out = world.score("winclip", {"temperature": 0.5}, setting="k1")
    out.scores, out.maps, out.details
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import h5py
import numpy as np
import pandas as pd
import torch
from PIL import Image
from scipy import ndimage

from fsad.backbones.loading import load_backbone
from fsad.data.manifest import manifest_row, write_manifest
from fsad.data.splits import draw_pool, draw_split, pool_image_ids, read_split
from fsad.features.extract import update_store
from fsad.features.store import FeatureStore
from fsad.io import write_json
from fsad.scorers.fit import CategoryFiles, FitJob, FitScope, run_fit
from fsad.scorers.registry import get_method, method_modules, method_params
from fsad.scorers.run import ScoreJob, run_scorer

TINY = {"arch": "fsad-tiny", "pretrained": "none", "image_size": 112}
CATEGORY = "widget"
SETTINGS = {
    "zs": {"name": "zs", "normal_shots": 0, "anomalous_shots": 0, "validation_normals": 0},
    "k1": {"name": "k1", "normal_shots": 1, "anomalous_shots": 0, "validation_normals": 0},
    "k2": {"name": "k2", "normal_shots": 2, "anomalous_shots": 0, "validation_normals": 0},
    "a1": {"name": "a1", "normal_shots": 1, "anomalous_shots": 1, "validation_normals": 2},
}
WINDOW_SIZES, LAYERS, VV_LAYERS = (2, 3, 7), (1, 2), (2,)


def textured_image(rng: np.random.Generator, size: int, defect: np.ndarray | None = None) -> np.ndarray:
    """A soft grey noise texture; ``defect`` (a boolean mask) is painted bright, so anomalies are visible to a CLIP."""
    texture = ndimage.gaussian_filter(rng.random((size, size)), 2)
    gray = np.clip((texture - texture.mean()) / texture.std() * 12 + 120, 0, 255)
    if defect is not None:
        gray[defect] = 250
    return np.stack([gray] * 3, axis=-1).astype(np.uint8)


@dataclass
class ScoreOutputs:
    scores: pd.DataFrame
    maps: np.ndarray | None
    details: dict[str, Any]


@dataclass
class World:
    """Files of one dataset (``toy``), category ``widget``: manifest, pool, splits, feature store, text cache."""

    root: Path
    manifest: Path
    pool: Path
    store: Path
    splits: dict[str, Path]
    dataset: str = "toy"
    map_size: int = 32
    plugins: list[str] = field(default_factory=list)
    backbone: dict[str, Any] = field(default_factory=lambda: dict(TINY))

    def params(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """``params`` checked against the method's schema, defaults filled in (as the workflow does)."""
        return method_params(get_method(method, self.plugins), dict(params or {}))

    def category_files(self) -> CategoryFiles:
        return CategoryFiles(self.dataset, CATEGORY, self.manifest, self.pool, self.store)

    def fit(self, method: str, params: dict[str, Any] | None = None, setting: str | None = "k1", out: Path | None = None,
            categories: list[CategoryFiles] | None = None, seed: int = 0) -> Path:
        """Run the method's fit through :func:`run_fit` (scope run: on ``setting``'s split); returns the model path."""
        declared = get_method(method, self.plugins)
        filled = self.params(method, params)
        out = out or self.root / "models" / f"{method}-{abs(hash(repr(sorted(filled.items()))))}-{setting}"
        run_scope = declared.fit.scope == "run"
        scope = FitScope(self.dataset, CATEGORY, setting, 0) if run_scope else FitScope(self.dataset)
        run_fit(FitJob(method, method_module=method_modules(self.plugins)[method], scope=scope, categories=categories or [self.category_files()],
                       split_path=self.splits[setting] if run_scope else None, text_cache_dir=self.root / "text", backbone_spec=self.backbone,
                       fit_params=declared.fit_params(filled), weights_fallback="error", seed=seed, out_model=out / "model.safetensors",
                       out_info=out / "fit.json"), torch.device("cpu"))
        return out / "model.safetensors"

    def score(self, method: str, params: dict[str, Any] | None = None, setting: str = "k1", model: Path | None = None,
              generated: dict[str, Path] | None = None, out: Path | None = None, seed: int = 0) -> ScoreOutputs:
        """Run the method's score step through :func:`run_scorer` on ``setting``'s split; read back its outputs."""
        declared = get_method(method, self.plugins)
        filled = self.params(method, params)
        out = out or self.root / "scores" / f"{method}-{abs(hash(repr(sorted(filled.items()))))}-{setting}-{seed}"
        run_scorer(ScoreJob(method, method_module=method_modules(self.plugins)[method], split_path=self.splits[setting], manifest_path=self.manifest,
                            features_store=self.store, text_cache_dir=self.root / "text", backbone_spec=self.backbone, scorer_params=declared.score_params(filled),
                            map_size=self.map_size, weights_fallback="error", seed=seed, out_scores=out / "run0.parquet", out_maps=out / "run0.maps.h5",
                            out_details=out / "run0.json", model_path=model, generated=generated or {}), torch.device("cpu"))
        maps = None
        with h5py.File(out / "run0.maps.h5") as h5:
            if "maps" in h5:
                maps = h5["maps"][:]
        return ScoreOutputs(pd.read_parquet(out / "run0.parquet"), maps, json.loads((out / "run0.json").read_text()))


def build_world(root: Path, n_train: int = 6, n_good: int = 3, n_anomalous: int = 3, size: int = 112,
                window_sizes=WINDOW_SIZES, layers=LAYERS, vv_layers=VV_LAYERS, dataset: str = "toy", seed: int = 0,
                backbone: dict[str, Any] = TINY) -> World:
    """Write the tiny world under ``root`` and encode its store with the tiny CLIP (random weights, a few seconds).

    ``dataset`` names the world's dataset (pool, splits); ``seed`` draws its pixels and masks, so two worlds built with
    different seeds (e.g. a training and an evaluated dataset) share image ids but no image content. ``backbone`` is
    the network of the store (e.g. a timm one, with the window sizes and layers it has).
    """
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for split, defect, count in (("train", "good", n_train), ("test", "good", n_good), ("test", "spot", n_anomalous)):
        for i in range(count):
            mask = None
            if defect != "good":
                mask = np.zeros((size, size), bool)
                y, x = rng.integers(10, size - 40, size=2)
                mask[y : y + 28, x : x + 28] = True
            path = root / "images" / f"{split}_{defect}_{i}.png"
            Image.fromarray(textured_image(rng, size, mask)).save(path)
            mask_path = ""
            if mask is not None:
                mask_path = root / "images" / f"{split}_{defect}_{i}_mask.png"
                Image.fromarray(mask.astype(np.uint8) * 255).save(mask_path)
            rows.append(manifest_row(CATEGORY, split, defect, str(i), path, mask_path))
    manifest = pd.DataFrame(rows)
    write_manifest(manifest, root / "manifest.csv")
    pool = draw_pool(manifest, dataset=dataset, category=CATEGORY, seed=0, max_test=None, normal_pool=4, anomalous_pool=1)
    write_json(root / "pool.json", pool)
    splits = {}
    for name, setting in SETTINGS.items():
        splits[name] = root / "splits" / f"{name}.json"
        write_json(splits[name], draw_split(pool, setting, 0))
    paths = manifest.set_index("image_id")["image_path"]
    store = root / "features" / f"{CATEGORY}.h5"
    update_store(FeatureStore(store), load_backbone(backbone, "cpu"), {i: paths[i] for i in pool_image_ids(pool)}, window_sizes,
                               layers=layers, vv_layers=vv_layers)
    return World(root, root / "manifest.csv", root / "pool.json", store, splits, dataset=dataset, backbone=dict(backbone))


def memoized_scores(world: World, method: str, default_setting: str = "k1") -> Callable[..., ScoreOutputs]:
    """``run(params, setting)``: :meth:`World.score` of ``method``, memoised so a module's tests share their runs."""
    cache: dict[str, ScoreOutputs] = {}

    def run(params: dict[str, Any] | None = None, setting: str = default_setting) -> ScoreOutputs:
        key = repr((sorted((params or {}).items()), setting))
        if key not in cache:
            cache[key] = world.score(method, params or {}, setting=setting, out=world.root / "scores" / f"{method}-run{len(cache)}")
        return cache[key]

    return run


def write_pool(world: World, window_sizes=(), layers=(), vv_layers=(), setting: str = "k1",
               copy: Callable[[Image.Image], Image.Image] = lambda image: image, mid_layers=(), name: str = "gen_a") -> dict[str, Any]:
    """A generator's pool ``name`` for ``setting``'s run: the reference, then ``g0`` (a train normal the split does not
    use) and ``g1`` (``copy`` of the first anomalous test image), with their feature store on the world's backbone.

    Returns:
        ``generated_pool`` and ``generated_pool_features`` (a score job's ``generated``), ``copy_of`` and ``unused`` (the source images).
    """
    split = read_split(world.splits[setting])
    manifest = pd.read_csv(world.manifest).set_index("image_id")
    copy_of = next(i for i in split.test if manifest.loc[i, "label"] == 1)
    unused = next(i for i in manifest.index if manifest.loc[i, "split"] == "train" and i not in split.normal_refs)
    directory = world.root / "pools" / name
    directory.mkdir(parents=True)
    Image.open(manifest.loc[unused, "image_path"]).save(directory / "g0.png")
    copy(Image.open(manifest.loc[copy_of, "image_path"])).save(directory / "g1.png")
    pd.DataFrame({"image_id": [split.normal_refs[0], "g0", "g1"], "kind": ["reference", "text_to_image", "image_to_image"],
                  "file": ["", "g0.png", "g1.png"], "source": [split.normal_refs[0], "", copy_of]}).to_csv(directory / "index.csv", index=False)
    store = world.root / "pools" / f"{name}.h5"
    update_store(FeatureStore(store), load_backbone(world.backbone, "cpu"), {"g0": str(directory / "g0.png"), "g1": str(directory / "g1.png")},
                 window_sizes, layers=layers, vv_layers=vv_layers, mid_layers=mid_layers)
    return {"generated_pool": directory, "generated_pool_features": store, "copy_of": copy_of, "unused": unused}


def assert_smoothing_moves_the_maps_alone(sharp: ScoreOutputs, default: ScoreOutputs, blurred: ScoreOutputs) -> None:
    """Runs at a smaller, the default and a larger Gaussian sigma: the same scores, maps whose pixel variance falls."""
    pd.testing.assert_frame_equal(sharp.scores, default.scores)
    pd.testing.assert_frame_equal(blurred.scores, default.scores)
    spread = [out.maps.astype(np.float64).var(axis=(1, 2)).mean() for out in (sharp, default, blurred)]
    assert spread[0] > spread[1] > spread[2], spread
