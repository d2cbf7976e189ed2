"""Synthetic: procedural defects with exact pixel masks on the normal images of another dataset.

The options (``source``, ``copies``, ``seed``, ``n_train_normals``, ``n_test_normals``,
``n_anomalies``, ``image_size``, ``defect_types``; all optional) are declared with their types,
defaults and descriptions in ``synthetic.schema.yaml`` beside this module; the adapter reads them
from the spec :meth:`fsad.data.registry.DatasetAdapter.options` fills. The source kind's adapter
runs with a spec holding only ``name`` and ``kind``, its files under ``data_dir/source``; each of
its categories gives one synthetic category, or ``copies`` numbered ones (``textile1``,
``textile2``, ...: like VisA's ``pcb1`` .. ``pcb4``; for scale runs and for tests that need many
categories of a small source). ``seed`` seeds the choice of source images and every defect, through
:func:`fsad.seeding.derive_seed` and ``numpy.random.Generator``. Defect types
(:data:`fsad.data.synthetic_defects.DEFECT_TYPES`) take turns: anomaly ``i`` gets
``defect_types[i % len(defect_types)]``, so each type gets about the same count.

Per category the source normals (sorted by image id) are shuffled once; the first ones become train
normals, the next ones test normals, the next ones the bases of the anomalies, so train images
never share a source image with test images. CutPaste donors are other test-side source images.
Normal images are resized copies of their source; an anomaly's mask is exactly the set of pixels
that differ from its resized source. Everything is written as PNG under ``raw_root`` (default
``data_dir/raw``): ``{category}/{split}/{defect_type}/{NNN}_{source stem}.png`` and
``{category}/ground_truth/{defect_type}/{NNN}_{source stem}_mask.png``; a rerun writes byte-identical files.
Files left by an earlier run with other options stay in place but are not listed in the manifest.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fsad.data.manifest import MANIFEST_COLUMNS, manifest_row
from fsad.data.registry import DatasetSpec, dataset_categories, prepare_dataset, raw_root, register
from fsad.data.synthetic_defects import add_defect, load_rgb, save_png
from fsad.seeding import derive_seed


def _source_spec(spec: DatasetSpec) -> DatasetSpec:
    """The spec the source kind's adapter runs with: a name and a kind, nothing else."""
    return {"name": f"{spec.get('name', 'synthetic')}-source", "kind": spec["source"]}


def _categories_by_source(spec: DatasetSpec) -> dict[str, str]:
    """Synthetic category -> the source category it is made from."""
    source_categories = dataset_categories(_source_spec(spec))
    if spec["copies"] == 1:
        return {category: category for category in source_categories}
    return {f"{category}{i}": category for category in source_categories for i in range(1, spec["copies"] + 1)}


def synthetic_categories(spec: DatasetSpec) -> list[str]:
    """The source dataset's categories (each ``copies`` times, numbered, when ``copies`` > 1)."""
    return list(_categories_by_source(spec))


@register("synthetic", categories=synthetic_categories, has_masks=True)
def prepare_synthetic(spec: DatasetSpec, data_dir: Path) -> pd.DataFrame:
    """Write normal copies and defective images with masks for every source category; return their manifest rows."""
    source_rows = prepare_dataset(_source_spec(spec), Path(data_dir) / "source")
    out_root = raw_root(spec, Path(data_dir))
    rows: list[dict[str, Any]] = []
    for category, source_category in _categories_by_source(spec).items():
        normals = source_rows[(source_rows["category"] == source_category) & (source_rows["label"] == 0)]
        rows += _prepare_category(spec, category, normals.sort_values("image_id"), out_root / category)
    return pd.DataFrame(rows, columns=MANIFEST_COLUMNS)


def _prepare_category(spec: DatasetSpec, category: str, normals: pd.DataFrame, out_dir: Path) -> list[dict[str, Any]]:
    """Draw, write and list one category's normals and anomalies (``spec``: the options, defaults filled in)."""
    n_train, n_test, n_anomalies = spec["n_train_normals"], spec["n_test_normals"], spec["n_anomalies"]
    needed = n_train + n_test + n_anomalies
    # CutPaste needs a donor other than the base, so the test side must hold at least two images.
    if len(normals) < needed or n_test + n_anomalies < 2:
        raise ValueError(
            f"dataset {spec.get('name', 'synthetic')!r}: category {category!r} of source {spec['source']!r} has "
            f"{len(normals)} normal images but n_train_normals + n_test_normals + n_anomalies = {needed} (and at least two "
            "test-side images) are needed; lower those options"
        )
    seed, size = spec["seed"], spec["image_size"]
    rng = np.random.default_rng(derive_seed(seed, "synthetic", spec["source"], category))
    order = rng.permutation(len(normals))[:needed]
    chosen = normals.iloc[order]
    train, test_normals, bases = chosen[:n_train], chosen[n_train : n_train + n_test], chosen[n_train + n_test :]
    test_side_paths = list(chosen["image_path"][n_train:])

    rows = []
    for split, part in (("train", train), ("test", test_normals)):
        for index, source_path in enumerate(part["image_path"]):
            stem = _stem(index, source_path)
            path = out_dir / split / "good" / f"{stem}.png"
            save_png(load_rgb(source_path, size), path)
            rows.append(manifest_row(category, split, "good", stem, path, ""))
    for index, (source_id, source_path) in enumerate(zip(bases["image_id"], bases["image_path"])):
        stem = _stem(index, source_path)
        defect_type = spec["defect_types"][index % len(spec["defect_types"])]
        defect_rng = np.random.default_rng(derive_seed(seed, "synthetic", spec["source"], category, source_id, defect_type))
        donors = [p for p in test_side_paths if p != source_path]
        donor = load_rgb(donors[defect_rng.integers(len(donors))], size) if defect_type == "cutpaste" else None
        defect = add_defect(load_rgb(source_path, size), defect_type, defect_rng, donor)
        image_path = out_dir / "test" / defect_type / f"{stem}.png"
        mask_path = out_dir / "ground_truth" / defect_type / f"{stem}_mask.png"
        save_png(defect.image, image_path)
        save_png(defect.mask, mask_path)
        rows.append(manifest_row(category, "test", defect_type, stem, image_path, mask_path))
    return rows


def _stem(index: int, source_path: str) -> str:
    """File stem of a generated image: its position (unique per split and type) and its source's stem, for tracing."""
    return f"{index:03d}_{Path(source_path).stem}"
