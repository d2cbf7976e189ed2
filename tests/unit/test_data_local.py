"""Offline datasets: textile (conformal-clip-data), elpv (elpv-dataset) and synthetic defects with exact masks."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.model_selection import train_test_split

from fsad.data.adapters.elpv import elpv_root, read_elpv_labels
from fsad.data.adapters.textile import textile_root
from fsad.data.manifest import validate_manifest
from fsad.data.registry import dataset_categories, get_adapter, prepare_dataset
from fsad.data.synthetic_defects import changed_pixels, load_rgb

TEXTILE = {"name": "textile", "kind": "textile"}
ELPV = {"name": "elpv", "kind": "elpv"}
SMALL_SYNTHETIC = {
    "name": "synthetic",
    "kind": "synthetic",
    "n_train_normals": 3,
    "n_test_normals": 2,
    "n_anomalies": 4,
    "image_size": 64,
}


@pytest.fixture(scope="module")
def textile(tmp_path_factory):
    return prepare_dataset(TEXTILE, tmp_path_factory.mktemp("textile"))


@pytest.fixture(scope="module")
def elpv_labels():
    return read_elpv_labels(elpv_root(ELPV) / "labels.csv")


def synthetic(tmp_path: Path, **options) -> pd.DataFrame:
    return prepare_dataset(SMALL_SYNTHETIC | options, tmp_path)


def test_adapters_declare_their_categories_and_masks():
    assert dataset_categories(TEXTILE) == ["textile"]
    assert dataset_categories(ELPV) == ["mono", "poly"]
    assert dataset_categories(SMALL_SYNTHETIC) == ["textile"]
    assert dataset_categories(SMALL_SYNTHETIC | {"source": "elpv"}) == ["mono", "poly"]
    assert not get_adapter("textile").has_masks and not get_adapter("elpv").has_masks
    assert get_adapter("synthetic").has_masks


def test_textile_counts_labels_and_split_follow_the_package(textile):
    validate_manifest(textile)
    counts = textile.groupby(["label", "defect_type"]).size().to_dict()
    assert counts == {(0, "good"): 1000, (1, "global"): 500, (1, "local"): 500}
    assert set(textile.loc[textile["label"] == 1, "split"]) == {"test"}
    n_train = (textile["split"] == "train").sum()
    assert 400 < n_train < 600 and set(textile.loc[textile["split"] == "train", "label"]) == {0}
    assert (textile["mask_path"] == "").all()
    root = textile_root(TEXTILE)
    assert textile["image_path"].map(lambda p: Path(p).is_absolute() and Path(p).is_relative_to(root)).all()
    assert Path(textile["image_path"].iloc[0]).exists()


def test_textile_is_reproducible_and_independent_of_the_output_folder(textile, tmp_path):
    pd.testing.assert_frame_equal(prepare_dataset(TEXTILE, tmp_path), textile)


@pytest.mark.parametrize(
    ("threshold", "kept_anomalous"),
    [(0.5, {"p0.67", "p1.00"}), (0.2, {"p0.33", "p0.67", "p1.00"}), (0.7, {"p1.00"})],
)
def test_elpv_anomaly_threshold_keeps_cells_above_it_and_drops_uncertain_ones(tmp_path, elpv_labels, threshold, kept_anomalous):
    manifest = prepare_dataset(ELPV | {"anomaly_threshold": threshold}, tmp_path)
    assert set(manifest.loc[manifest["label"] == 1, "defect_type"]) == kept_anomalous
    expected = elpv_labels[(elpv_labels["probability"] == 0) | (elpv_labels["probability"] > threshold)]
    assert len(manifest) == len(expected)
    assert manifest.groupby("category").size().to_dict() == expected.groupby("cell_type").size().to_dict()
    assert set(manifest.loc[manifest["label"] == 0, "defect_type"]) == {"good"}


def test_elpv_default_manifest_is_valid_and_reproducible(tmp_path, elpv_labels):
    manifest = prepare_dataset(ELPV, tmp_path / "a")
    validate_manifest(manifest)
    assert len(manifest) == ((elpv_labels["probability"] == 0) | (elpv_labels["probability"] > 0.5)).sum()
    for category, rows in manifest.groupby("category"):
        train = rows[rows["split"] == "train"]
        assert set(train["label"]) == {0}, category
        assert 0.35 < len(train) / (rows["label"] == 0).sum() < 0.65, category
    assert set(manifest.loc[manifest["label"] == 1, "split"]) == {"test"}
    assert (manifest["mask_path"] == "").all() and manifest["image_path"].map(lambda p: Path(p).exists()).all()
    pd.testing.assert_frame_equal(prepare_dataset(ELPV, tmp_path / "b"), manifest)


def test_elpv_inctrl_protocol_is_one_category_with_certain_defects_and_a_75_25_normal_split(tmp_path):
    # The ELPV paper's counts: 1508 functional cells (p = 0) and 715 defective with certainty (p = 1), 313 mono and 402 poly.
    spec = ELPV | {"protocol": "inctrl"}
    assert dataset_categories(spec) == ["elpv"]
    manifest = prepare_dataset(spec, tmp_path)
    validate_manifest(manifest)
    assert set(manifest["category"]) == {"elpv"}
    normal, anomalous = manifest[manifest["label"] == 0], manifest[manifest["label"] == 1]
    assert len(normal) == 1508 and len(anomalous) == 715
    assert anomalous["defect_type"].value_counts().to_dict() == {"poly": 402, "mono": 313}
    assert set(anomalous["split"]) == {"test"}
    # train_test_split(test_size=0.25): ceil(0.25 * 1508) = 377 test normals, 1131 train.
    assert normal["split"].value_counts().to_dict() == {"train": 1131, "test": 377}
    # InCTRL's rule, applied to the normal file names read with numpy as its script reads them.
    raw = np.genfromtxt(elpv_root(ELPV) / "labels.csv", dtype=["|S19", "<f8", "|S4"], names=["path", "probability", "type"])
    names = np.char.decode(raw["path"])[raw["probability"] == 0]
    train, _ = train_test_split(names, test_size=0.25, random_state=42)
    assert set(normal.loc[normal["split"] == "train", "image_path"].map(lambda p: "images/" + Path(p).name)) == set(train)
    pd.testing.assert_frame_equal(prepare_dataset(spec, tmp_path / "again"), manifest)


def test_elpv_default_protocol_is_unchanged_by_the_inctrl_option(tmp_path):
    pd.testing.assert_frame_equal(prepare_dataset(ELPV | {"protocol": "threshold"}, tmp_path / "a"), prepare_dataset(ELPV, tmp_path / "b"))
    with pytest.raises(ValueError, match="protocol"):
        prepare_dataset(ELPV | {"protocol": "incrtl"}, tmp_path / "c")


def test_elpv_rejects_a_threshold_that_keeps_no_anomaly(tmp_path):
    with pytest.raises(ValueError, match="anomaly_threshold"):
        prepare_dataset(ELPV | {"anomaly_threshold": 1.0}, tmp_path)


def test_synthetic_counts_labels_and_masks(tmp_path):
    manifest = synthetic(tmp_path)
    validate_manifest(manifest)
    assert manifest.groupby(["split", "defect_type"]).size().to_dict() == {
        ("test", "cutpaste"): 1, ("test", "good"): 2, ("test", "noise"): 1, ("test", "scratch"): 1, ("test", "spot"): 1,
        ("train", "good"): 3,
    }  # fmt: skip
    assert (manifest["mask_path"] == "").eq(manifest["label"] == 0).all()
    raw = (tmp_path / "raw").resolve()
    assert manifest["image_path"].map(lambda p: Path(p).is_relative_to(raw) and Path(p).exists()).all()


def test_synthetic_defect_types_take_turns(tmp_path):
    manifest = synthetic(tmp_path, n_anomalies=5, defect_types=["scratch", "spot"])
    anomalous = manifest[manifest["label"] == 1]
    assert anomalous.groupby("defect_type").size().to_dict() == {"scratch": 3, "spot": 2}


def source_image(row) -> np.ndarray:
    """The resized textile image a synthetic image was made from (its stem is ``NNN_<source stem>``)."""
    stem = Path(row.image_path).stem.split("_", 1)[1]
    return load_rgb(textile_root(TEXTILE) / "nominal" / f"{stem}.jpg", SMALL_SYNTHETIC["image_size"])


def test_synthetic_normals_are_unchanged_copies_and_masks_are_exactly_the_changed_pixels(tmp_path):
    manifest = synthetic(tmp_path)
    for row in manifest.itertuples():
        image = load_rgb(row.image_path, SMALL_SYNTHETIC["image_size"])
        if row.label == 0:
            np.testing.assert_array_equal(image, source_image(row))
            continue
        mask = load_rgb(row.mask_path, SMALL_SYNTHETIC["image_size"])[..., 0] > 0
        assert mask.any(), row.image_id
        np.testing.assert_array_equal(mask, changed_pixels(source_image(row), image))


def test_synthetic_train_and_test_never_share_a_source_image(tmp_path):
    manifest = synthetic(tmp_path, n_train_normals=6, n_test_normals=4, n_anomalies=8)
    sources = manifest.assign(source=manifest["image_path"].map(lambda p: Path(p).stem.split("_", 1)[1]))
    assert not set(sources.loc[sources["split"] == "train", "source"]) & set(sources.loc[sources["split"] == "test", "source"])
    assert sources["source"].is_unique


def file_bytes(manifest: pd.DataFrame) -> dict[str, bytes]:
    paths = [p for p in pd.concat([manifest["image_path"], manifest["mask_path"]]) if p]
    return {Path(p).name: Path(p).read_bytes() for p in paths}


def test_synthetic_same_seed_gives_byte_identical_files_and_another_seed_differs(tmp_path):
    first = synthetic(tmp_path / "a")
    again = synthetic(tmp_path / "b")
    assert list(first["image_id"]) == list(again["image_id"])
    assert file_bytes(first) == file_bytes(again)
    rerun = synthetic(tmp_path / "a")
    assert file_bytes(rerun) == file_bytes(first)
    other = synthetic(tmp_path / "c", seed=1)
    assert list(other["image_id"]) != list(first["image_id"])
    assert file_bytes(other) != file_bytes(first)


def test_synthetic_asking_for_more_images_than_the_source_has_fails_clearly(tmp_path):
    with pytest.raises(ValueError, match="n_train_normals"):
        synthetic(tmp_path, n_train_normals=2000)
    with pytest.raises(ValueError, match="defect_types"):
        synthetic(tmp_path, defect_types=["crack"])


def test_synthetic_copies_are_numbered_categories_with_their_own_draws(tmp_path):
    assert dataset_categories(SMALL_SYNTHETIC | {"copies": 3}) == ["textile1", "textile2", "textile3"]
    assert dataset_categories(SMALL_SYNTHETIC | {"copies": 2, "source": "elpv"}) == ["mono1", "mono2", "poly1", "poly2"]
    manifest = synthetic(tmp_path, copies=3)
    validate_manifest(manifest)
    assert manifest.groupby("category").size().to_dict() == {"textile1": 9, "textile2": 9, "textile3": 9}
    sources = {category: frozenset(Path(p).stem.split("_", 1)[1] for p in rows["image_path"]) for category, rows in manifest.groupby("category")}
    assert len(set(sources.values())) == 3  # each copy draws its own source images


def test_synthetic_rejects_a_bad_copy_count(tmp_path):
    with pytest.raises(ValueError, match="copies"):
        synthetic(tmp_path, copies=0)
