"""float16 feature stores (the default) score like float32 ones: the tiny run once more with every backbone's
``storage_dtype: float32`` gives the same AUROCs to within 0.1 points."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import yaml

from fsad.features.store import FeatureStore

from .conftest import TINY, snakemake

# The tiny run is a session fixture: under pytest-xdist (--dist loadgroup) its readers share one worker.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("tiny_run")]
KEYS = ["scorer", "dataset", "category", "setting", "run", "metric"]
COMPARED = {"image_auroc", "pixel_auroc"}
TOLERANCE = 0.001  # metrics.csv holds fractions in [0, 1]: 0.1 points


@pytest.fixture(scope="module")
def float32_run(tmp_path_factory):
    """The tiny run with ``storage_dtype: float32`` on every backbone of the tiny config."""
    workdir = tmp_path_factory.mktemp("float32")
    backbones = {name: {"storage_dtype": "float32"} for name in yaml.safe_load(TINY.read_text())["backbones"]}
    overlay = workdir / "float32.yaml"
    overlay.write_text(yaml.safe_dump({"backbones": backbones}, sort_keys=False))
    snakemake(workdir, "--cores", "2", configfiles=(TINY, overlay))
    return workdir


def metrics(workdir: Path) -> pd.DataFrame:
    text = {column: str for column in ("dataset", "category", "setting", "scorer", "metric")}
    return pd.read_csv(workdir / "results/metrics/metrics.csv", dtype=text).set_index(KEYS)["value"]


def dataset_dtypes(path: Path) -> set[str]:
    dtypes: set[str] = set()
    with h5py.File(path, "r") as h5:
        h5.visititems(lambda _, obj: dtypes.add(str(obj.dtype)) if isinstance(obj, h5py.Dataset) else None)
    return dtypes


def store_dtypes(workdir: Path) -> dict[Path, set[str]]:
    """Feature store (path under ``cache/features``) -> its index's storage dtype and its shards' dataset dtypes."""
    root = workdir / "results/cache/features"
    found = {}
    for index in sorted(root.glob("*/**/*.h5")):
        if index.parent.suffix == ".shards" or "_text" in index.parts:
            continue
        store = FeatureStore(index)
        found[index.relative_to(root)] = {store.storage_dtype} | {dtype for shard in store.shard_paths() for dtype in dataset_dtypes(shard)}
    return found


def without_hash(path: Path) -> Path:
    """``vitb16plus-1a2b3c4d/...`` -> ``vitb16plus/...``."""
    return Path(path.parts[0].rsplit("-", 1)[0], *path.parts[1:])


def test_float16_stores_give_the_aurocs_of_float32_stores(tiny_run, float32_run):
    half_dir, _ = tiny_run
    half, full = store_dtypes(half_dir), store_dtypes(float32_run)
    assert half and sorted(map(without_hash, half)) == sorted(map(without_hash, full))
    assert all(dtypes == {"float16"} for dtypes in half.values()), half
    assert all(dtypes == {"float32"} for dtypes in full.values()), full
    # the dtype is part of the feature directory's hash
    assert not {p.parts[0] for p in half} & {p.parts[0] for p in full}

    a, b = metrics(half_dir), metrics(float32_run)
    assert sorted(a.index) == sorted(b.index)
    compared = a.index.get_level_values("metric").isin(sorted(COMPARED))
    assert compared.sum() > 0 and set(a.index[compared].get_level_values("metric")) == COMPARED
    diff = (a[compared] - b.loc[a.index[compared]]).abs().sort_values(ascending=False)
    print(f"\nlargest |float16 - float32| of {len(diff)} AUROCs:\n{diff.head(8).to_string()}")
    print(f"per metric: {diff.groupby(level='metric').max().to_dict()}; other metrics: max {np.abs(a - b.loc[a.index]).max():.6f}")
    assert diff.max() <= TOLERANCE, f"AUROCs further apart than {TOLERANCE}:\n{diff[diff > TOLERANCE].to_string()}"
