"""Synthetic: procedural defects with exact pixel masks on the normal images of another dataset.

Options (all optional):

* ``source`` (default ``textile``): the dataset kind whose normal images (label 0, any split) are
  used; its adapter is run with a spec holding only ``name`` and ``kind``, its files under
  ``data_dir/source``. One synthetic category per source category.
* ``copies`` (default 1): synthetic categories per source category. With more than one, copy ``i``
  of source category ``c`` is category ``{c}{i}`` (``textile1``, ``textile2``, ...: numbered like
  VisA's ``pcb1`` .. ``pcb4``), each with its own draw of images and defects; for scale runs and for
  tests that need many categories of a small source.
* ``seed`` (default 0): seeds the choice of source images and every defect, through
  :func:`fsad.seeding.derive_seed` and ``numpy.random.Generator``.
* ``n_train_normals`` (20), ``n_test_normals`` (20): normal images per category in train and test.
* ``n_anomalies`` (40): anomalous test images per category in total; defect types take turns
  (image ``i`` gets ``defect_types[i % len(defect_types)]``), so each type gets about the same count.
* ``image_size`` (240): every image is resized to a square of this side.
* ``defect_types`` (all of :data:`fsad.data.synthetic_defects.DEFECT_TYPES`): ``scratch``,
  ``spot``, ``cutpaste``, ``noise``; each is a ``defect_type`` value of the manifest.

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
from fsad.data.registry import DatasetSpec, get_adapter, raw_root, register
from fsad.data.synthetic_defects import DEFECT_TYPES, add_defect, load_rgb, save_png
from fsad.seeding import derive_seed

DEFAULTS: dict[str, Any] = {
    "source": "textile",
    "seed": 0,
    "copies": 1,
    "n_train_normals": 20,
    "n_test_normals": 20,
    "n_anomalies": 40,
    "image_size": 240,
    "defect_types": list(DEFECT_TYPES),
}


def synthetic_options(spec: DatasetSpec) -> dict[str, Any]:
    """The spec's synthetic options with defaults filled in, checked."""
    options = {key: spec.get(key, default) for key, default in DEFAULTS.items()}
    name = spec.get("name", "synthetic")
    if options["source"] == "synthetic":
        raise ValueError(f"dataset {name!r}: `source` must name another dataset kind, e.g. textile")
    if not isinstance(options["copies"], int) or options["copies"] < 1:
        raise ValueError(f"dataset {name!r}: copies must be a positive integer, not {options['copies']!r}")
    unknown = [t for t in options["defect_types"] if t not in DEFECT_TYPES]
    if unknown or not options["defect_types"]:
        raise ValueError(f"dataset {name!r}: defect_types {options['defect_types']} must be a non-empty subset of {list(DEFECT_TYPES)}")
    return options


def _source_spec(spec: DatasetSpec, source: str) -> DatasetSpec:
    return {"name": f"{spec.get('name', 'synthetic')}-source", "kind": source}


def _categories_by_source(spec: DatasetSpec) -> dict[str, str]:
    """Synthetic category -> the source category it is made from."""
    options = synthetic_options(spec)
    source_categories = get_adapter(options["source"]).categories(_source_spec(spec, options["source"]))
    if options["copies"] == 1:
        return {category: category for category in source_categories}
    return {f"{category}{i}": category for category in source_categories for i in range(1, options["copies"] + 1)}


def synthetic_categories(spec: DatasetSpec) -> list[str]:
    """The source dataset's categories (each ``copies`` times, numbered, when ``copies`` > 1)."""
    return list(_categories_by_source(spec))


@register("synthetic", categories=synthetic_categories, has_masks=True)
def prepare_synthetic(spec: DatasetSpec, data_dir: Path) -> pd.DataFrame:
    """Write normal copies and defective images with masks for every source category; return their manifest rows."""
    options = synthetic_options(spec)
    source = options["source"]
    source_rows = get_adapter(source).prepare(_source_spec(spec, source), Path(data_dir) / "source")
    out_root = raw_root(spec, Path(data_dir))
    rows: list[dict[str, Any]] = []
    for category, source_category in _categories_by_source(spec).items():
        normals = source_rows[(source_rows["category"] == source_category) & (source_rows["label"] == 0)]
        rows += _prepare_category(spec, options, category, normals.sort_values("image_id"), out_root / category)
    return pd.DataFrame(rows, columns=MANIFEST_COLUMNS)


def _prepare_category(
    spec: DatasetSpec, options: dict[str, Any], category: str, normals: pd.DataFrame, out_dir: Path
) -> list[dict[str, Any]]:
    n_train, n_test, n_anomalies = options["n_train_normals"], options["n_test_normals"], options["n_anomalies"]
    needed = n_train + n_test + n_anomalies
    # CutPaste needs a donor other than the base, so the test side must hold at least two images.
    if len(normals) < needed or n_test + n_anomalies < 2:
        raise ValueError(
            f"dataset {spec.get('name', 'synthetic')!r}: category {category!r} of source {options['source']!r} has "
            f"{len(normals)} normal images but n_train_normals + n_test_normals + n_anomalies = {needed} (and at least two "
            "test-side images) are needed; lower those options"
        )
    seed, size = options["seed"], options["image_size"]
    rng = np.random.default_rng(derive_seed(seed, "synthetic", options["source"], category))
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
        defect_type = options["defect_types"][index % len(options["defect_types"])]
        defect_rng = np.random.default_rng(derive_seed(seed, "synthetic", options["source"], category, source_id, defect_type))
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
