"""Few-shot splits.

Two steps keep reruns exact:

* :func:`draw_pool` fixes, once per category, the test subset and the candidate pools of normal and
  anomalous reference images. It depends only on the manifest, the seed and the pool sizes, never on
  settings or runs, so adding a setting or a run never changes the test set or the feature store.
* :func:`draw_split` takes one (setting, run)'s references and validation images from the pools.

Each run uses a different training sample (anomalous-samples paper, section 4.1):

* normal references: the normal pool is permuted once per setting, seeded from
  ``(seed, dataset, category, setting, "normal_refs")`` and never from the run; run ``r`` of a setting with ``n`` normal
  shots takes slice ``[r n, (r + 1) n)``, so the runs of a setting never share a normal reference;
* anomalous references: run ``r`` takes slice ``[r m, (r + 1) m)`` of the (ordered) anomalous pool;
* validation normals: drawn with the run's own seed ``(seed, dataset, category, setting, run)`` from
  the normal pool minus that run's normal references (they may be another run's references).

References and validation images come from the pools, which are disjoint from the test subset.

With fixed shots (a dataset's ``shots_file``, :mod:`fsad.data.fixed_shots`) the file's images of the category join
the normal pool and each run's normal references are the file's for that run; the rest is drawn as above.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fsad.io import read_json
from fsad.seeding import derive_seed


@dataclass
class Split:
    """A few-shot split (``splits/{dataset}/{category}/{setting}/run{run}.json``), as :func:`draw_split` writes it."""

    dataset: str
    category: str
    setting: str
    run: int
    seed: int
    normal_refs: list[str]
    anomalous_refs: list[str]
    validation: list[str]
    test: list[str]

    @property
    def label(self) -> str:
        """``dataset/category/setting/run{run}``, for messages and logs."""
        return f"{self.dataset}/{self.category}/{self.setting}/run{self.run}"


def read_split(path: str | Path) -> Split:
    """Load a split JSON written by the split stage."""
    data = read_json(path)
    fields = {f.name for f in dataclasses.fields(Split)}
    return Split(**{k: v for k, v in data.items() if k in fields})


def _choose(rng: np.random.Generator, ids: list[str], n: int) -> list[str]:
    """``n`` ids drawn without replacement, in drawn order (input sorted first, so results never depend on row order)."""
    ids = sorted(ids)
    if n <= 0 or not ids:
        return []
    return [ids[i] for i in rng.permutation(len(ids))[: min(n, len(ids))]]


def _stratified_test(rng: np.random.Generator, candidates: pd.DataFrame, max_test: int | None) -> list[str]:
    """At most ``max_test`` test images keeping the label proportions (at least one of each present label); all when None."""
    if max_test is None or len(candidates) <= max_test:
        return sorted(candidates["image_id"])
    by_label = {lbl: sorted(g["image_id"]) for lbl, g in candidates.groupby("label")}
    n_anomalous = len(by_label.get(1, []))
    want_anomalous = int(round(max_test * n_anomalous / len(candidates)))
    if n_anomalous:
        want_anomalous = min(max(want_anomalous, 1), n_anomalous, max_test - (1 if by_label.get(0) else 0))
    picked = _choose(rng, by_label.get(1, []), want_anomalous) + _choose(rng, by_label.get(0, []), max_test - want_anomalous)
    return sorted(picked)


def draw_pool(
    manifest: pd.DataFrame,
    *,
    dataset: str,
    category: str,
    seed: int,
    max_test: int | None,
    normal_pool: int,
    anomalous_pool: int,
    fixed_normals: Collection[str] = (),
) -> dict[str, Any]:
    """Fix the test subset and the reference pools of one category.

    ``fixed_normals`` (training normals of a shots file) join the drawn normal pool; they draw nothing, so every other
    image of the pool is the same with or without them.

    Normal candidates are training normals; anomalous candidates are anomalous images (training ones
    first, else test ones; those with masks first, since methods that learn from anomalies need them).
    Anomalous pool images are removed from the test candidates before the test subset is drawn; of the
    remaining test images, ``max_test`` are kept (stratified by label), or all of them when it is None.
    """
    rows = manifest[manifest["category"] == category]
    if rows.empty:
        raise ValueError(f"dataset {dataset!r}: no images of category {category!r} in the manifest")
    rng = np.random.default_rng(derive_seed(seed, dataset, category, "pool"))

    normals = _choose(rng, list(rows.loc[(rows["split"] == "train") & (rows["label"] == 0), "image_id"]), normal_pool)
    anomalous = rows[rows["label"] == 1]
    anomalous_ids: list[str] = []
    for in_train in (True, False):
        for with_mask in (True, False):
            part = anomalous[((anomalous["split"] == "train") == in_train) & ((anomalous["mask_path"] != "") == with_mask)]
            anomalous_ids += _choose(rng, list(part["image_id"]), anomalous_pool - len(anomalous_ids))

    test_candidates = rows[(rows["split"] == "test") & ~rows["image_id"].isin(anomalous_ids)]
    test = _stratified_test(rng, test_candidates, max_test)
    if not test:
        raise ValueError(f"dataset {dataset!r}, category {category!r}: no test images left after drawing the pools")
    normals += sorted(set(fixed_normals) - set(normals))
    return {
        "dataset": dataset,
        "category": category,
        "seed": seed,
        "test": test,
        "normal_pool": normals,
        "anomalous_pool": anomalous_ids,
    }


def pool_image_ids(pool: dict[str, Any]) -> list[str]:
    """Every image a category's jobs may need features for: test subset and both pools."""
    return sorted(set(pool["test"]) | set(pool["normal_pool"]) | set(pool["anomalous_pool"]))


def _normal_order(pool: dict[str, Any], setting: str) -> list[str]:
    """The normal pool permuted once per setting (not per run): run ``r`` takes its ``r``-th slice of references."""
    rng = np.random.default_rng(derive_seed(pool["seed"], pool["dataset"], pool["category"], setting, "normal_refs"))
    return _choose(rng, pool["normal_pool"], len(pool["normal_pool"]))


def _check_pool_sizes(pool: dict[str, Any], setting: dict[str, Any], run: int, fixed: bool = False) -> None:
    """Fail, naming the config key, when the pools cannot give ``run`` references disjoint from runs ``0..run-1``
    (``fixed``: the normal references come from a shots file, so only their count with the validation normals counts)."""
    n_normal, n_valid, n_anomalous = setting["normal_shots"], setting["validation_normals"], setting["anomalous_shots"]
    n_pool = len(pool["normal_pool"])
    where = f"dataset {pool['dataset']!r}, category {pool['category']!r}, setting {setting['name']!r}, run {run}"
    if n_pool == 0 and n_normal + n_valid > 0:
        raise ValueError(
            f"{where}: the setting needs {n_normal} normal references and {n_valid} validation normals, but the category "
            "has no normal training images (a test-only dataset or protocol): only zero-shot settings (normal_shots: 0, "
            "validation_normals: 0) can run on it; drop the dataset from the few-shot scorers' datasets or the setting "
            "from their settings"
        )
    if not fixed and n_normal * (run + 1) > n_pool:
        raise ValueError(
            f"{where}: needs {n_normal * (run + 1)} distinct normal references across runs 0..{run} ({n_normal} per run) "
            f"but the normal pool holds {n_pool}; raise reference_pool.normal in the config (or the dataset has too few training normals)"
        )
    if n_normal + n_valid > n_pool:
        raise ValueError(
            f"{where}: needs {n_normal} normal references + {n_valid} validation normals = {n_normal + n_valid} normal "
            f"training images but the normal pool holds {n_pool}; raise reference_pool.normal in the config "
            "(or the dataset has too few training normals)"
        )
    if n_anomalous * (run + 1) > len(pool["anomalous_pool"]):
        raise ValueError(
            f"{where}: needs {n_anomalous * (run + 1)} distinct anomalous images across runs 0..{run} but the pool holds "
            f"{len(pool['anomalous_pool'])}; raise reference_pool.anomalous in the config"
        )


def draw_split(pool: dict[str, Any], setting: dict[str, Any], run: int, fixed_refs: list[str] | None = None) -> dict[str, Any]:
    """Take the references and validation images of one (setting, run) from a category's pools.

    Runs of a setting get disjoint normal references (slices of one per-setting permutation of the normal
    pool) and disjoint anomalous references (slices of the anomalous pool), so each run uses a different
    training sample, as the anomalous-samples protocol asks. Validation normals are drawn with the run's
    seed from the normal pool minus the run's own normal references.

    ``fixed_refs`` (the run's shots from a shots file, all in the pool) are the normal references instead.
    """
    _check_pool_sizes(pool, setting, run, fixed=fixed_refs is not None)
    name = setting["name"]
    n_normal, n_valid, n_anomalous = setting["normal_shots"], setting["validation_normals"], setting["anomalous_shots"]
    if fixed_refs is None:
        normal_refs = _normal_order(pool, name)[run * n_normal : (run + 1) * n_normal]
    else:
        outside = sorted(set(fixed_refs) - set(pool["normal_pool"]))
        if len(fixed_refs) != n_normal or outside:
            raise ValueError(
                f"{pool['dataset']}/{pool['category']}/{name}/run{run}: the fixed shots {fixed_refs} are not {n_normal} images of the normal pool "
                f"(outside it: {outside}); rerun draw_pool with the dataset's shots_file (delete splits/{pool['dataset']}/{pool['category']}/pool.json)"
            )
        normal_refs = list(fixed_refs)
    split_seed = derive_seed(pool["seed"], pool["dataset"], pool["category"], name, run)
    rest = sorted(set(pool["normal_pool"]) - set(normal_refs))
    return {
        "dataset": pool["dataset"],
        "category": pool["category"],
        "setting": name,
        "run": run,
        "seed": split_seed,
        "normal_refs": normal_refs,
        "validation": _choose(np.random.default_rng(split_seed), rest, n_valid),
        "anomalous_refs": pool["anomalous_pool"][run * n_anomalous : (run + 1) * n_anomalous],
        "test": list(pool["test"]),
    }
