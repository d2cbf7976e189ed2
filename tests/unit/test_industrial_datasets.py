"""AITEX (InCTRL's crops), DAGM 2007 and DTD-Synthetic: hand-placed files, read from local fixture trees."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.model_selection import train_test_split

from fsad.data.manifest import validate_manifest
from fsad.data.registry import dataset_categories, get_adapter, prepare_dataset

RNG = np.random.default_rng(3)


def save(path: Path, pixels: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels.astype(np.uint8)).save(path)
    return path


def grey(height: int, width: int) -> np.ndarray:
    return RNG.integers(1, 255, (height, width), dtype=np.uint8)


def names(rows) -> list[str]:
    return sorted(Path(p).stem for p in rows["image_path"])


# --- AITEX --------------------------------------------------------------------------------------------------------


@pytest.fixture
def aitex_root(tmp_path) -> Path:
    """3 defect-free 256x4096 images in two fabric folders, 2 defective ones (nested folders, as the archives unpack):
    0001_002_00 with defects in crops 0 and 15, 0002_019_01 in crop 3 only."""
    root = tmp_path / "aitex" / "AITEX"
    for fabric, stem in (("fabric00", "0001_000_00"), ("fabric00", "0002_000_00"), ("fabric01", "0003_000_01")):
        save(root / "NODefect_images" / fabric / f"{stem}.png", grey(256, 4096))
    for stem, crops in (("0001_002_00", [0, 15]), ("0002_019_01", [3])):
        save(root / "Defect_images" / "Defect_images" / f"{stem}.png", grey(256, 4096))
        mask = np.zeros((256, 4096), np.uint8)
        for i in crops:
            mask[100:110, i * 256 + 5 : i * 256 + 9] = 255
        save(root / "Mask_images" / "Mask_images" / f"{stem}_mask.png", mask)
    return tmp_path / "aitex"


def test_aitex_cuts_16_crops_per_normal_image_keeps_defect_crops_with_a_mask_and_splits_normals_75_25(tmp_path, aitex_root):
    spec = {"name": "aitex", "kind": "aitex", "root": str(aitex_root)}
    assert dataset_categories(spec) == ["fabric"] and get_adapter("aitex").has_masks
    manifest = prepare_dataset(spec, tmp_path / "data")
    validate_manifest(manifest)
    normal, anomalous = manifest[manifest["label"] == 0], manifest[manifest["label"] == 1]
    assert len(normal) == 3 * 16
    # 48 normal crops, test_size 0.25: ceil(12) = 12 test, 36 train
    assert normal["split"].value_counts().to_dict() == {"train": 36, "test": 12}
    # the crops listed folder by folder, file by file, crop 0 to 15 (InCTRL's loop, in sorted rather than listdir order)
    listed = [f"{f}_{s}_{i}" for f, s in (("fabric00", "0001_000_00"), ("fabric00", "0002_000_00"), ("fabric01", "0003_000_01")) for i in range(16)]
    assert names(normal) == sorted(listed)
    train, _ = train_test_split(listed, test_size=0.25, random_state=42)
    assert names(normal[normal["split"] == "train"]) == sorted(train)
    assert names(anomalous) == ["0001_002_00_0", "0001_002_00_15", "0002_019_01_3"]
    assert set(anomalous["split"]) == {"test"}
    assert anomalous.set_index(anomalous["image_path"].map(lambda p: Path(p).stem))["defect_type"].to_dict() == {
        "0001_002_00_0": "Broken_end", "0001_002_00_15": "Broken_end", "0002_019_01_3": "Fuzzyball"}
    row = anomalous[anomalous["image_path"].str.endswith("0002_019_01_3.png")].iloc[0]
    mask = np.asarray(Image.open(row["mask_path"]))
    expected_mask = np.zeros((256, 256), np.uint8)
    expected_mask[100:110, 5:9] = 255
    np.testing.assert_array_equal(mask, expected_mask)
    source = np.asarray(Image.open(aitex_root / "AITEX/Defect_images/Defect_images/0002_019_01.png"))
    np.testing.assert_array_equal(np.asarray(Image.open(row["image_path"]))[..., 0], source[:, 3 * 256 : 4 * 256])


def test_aitex_missing_names_the_source_page_and_the_folders(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        prepare_dataset({"name": "aitex", "kind": "aitex"}, tmp_path / "data")
    message = str(err.value)
    assert "https://www.aitex.es/afid/" in message and str((tmp_path / "data/raw").resolve()) in message
    assert "NODefect_images" in message and "Mask_images" in message


def test_aitex_defect_image_without_its_mask_is_an_error(tmp_path, aitex_root):
    (aitex_root / "AITEX/Mask_images/Mask_images/0002_019_01_mask.png").unlink()
    with pytest.raises(FileNotFoundError, match="0002_019_01_mask.png"):
        prepare_dataset({"name": "aitex", "kind": "aitex", "root": str(aitex_root)}, tmp_path / "data")
    assert not (tmp_path / "data" / "aitex_crops").exists()


# --- DAGM 2007 ----------------------------------------------------------------------------------------------------


@pytest.fixture
def dagm_root(tmp_path) -> Path:
    """Class1 and Class7: Train with 3 normal + 1 defective, Test with 2 normal + 2 defective; Labels.txt beside masks."""
    root = tmp_path / "dagm" / "DAGM_KaggleUpload"
    for category in ("Class1", "Class7"):
        for phase, normal, defective in (("Train", ["0001", "0002", "0003"], ["0004"]), ("Test", ["0001", "0003"], ["0002", "0004"])):
            for stem in normal + defective:
                save(root / category / phase / f"{stem}.PNG", grey(32, 32))
            for stem in defective:
                mask = np.zeros((32, 32), np.uint8)
                mask[4:9, 4:9] = 255
                save(root / category / phase / "Label" / f"{stem}_label.PNG", mask)
            (root / category / phase / "Label" / "Labels.txt").write_text("1\n")
    return tmp_path / "dagm"


def test_dagm_images_with_a_label_mask_are_anomalous_and_the_dataset_split_is_kept(tmp_path, dagm_root):
    spec = {"name": "dagm", "kind": "dagm", "root": str(dagm_root)}
    assert dataset_categories(spec) == [f"Class{k}" for k in range(1, 11)]
    manifest = prepare_dataset(spec | {"categories": ["Class1", "Class7"]}, tmp_path / "data")
    validate_manifest(manifest)
    assert len(manifest) == 2 * (4 + 4)
    for category, rows in manifest.groupby("category"):
        counts = rows.groupby(["split", "label"]).size().to_dict()
        assert counts == {("train", 0): 3, ("train", 1): 1, ("test", 0): 2, ("test", 1): 2}, category
        test_anomalous = rows[(rows["split"] == "test") & (rows["label"] == 1)]
        assert names(test_anomalous) == ["0002", "0004"] and set(test_anomalous["defect_type"]) == {"defect"}
        assert all(Path(m).name == f"{Path(i).stem}_label.PNG" for i, m in zip(test_anomalous["image_path"], test_anomalous["mask_path"]))
        assert (rows.loc[rows["label"] == 0, "mask_path"] == "").all()


def test_dagm_missing_names_the_source_page(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        prepare_dataset({"name": "dagm", "kind": "dagm"}, tmp_path / "data")
    assert "hci.iwr.uni-heidelberg.de" in str(err.value) and "Class<k>/Train" in str(err.value)


# --- DTD-Synthetic ------------------------------------------------------------------------------------------------


def test_dtd_synthetic_reads_the_mvtec_layout_and_names_its_source_when_missing(tmp_path):
    spec = {"name": "dtd", "kind": "dtd_synthetic"}
    assert len(dataset_categories(spec)) == 12 and "Woven_001" in dataset_categories(spec)
    with pytest.raises(FileNotFoundError) as err:
        prepare_dataset(spec, tmp_path / "data")
    assert "drive.google.com/drive/folders/10OyPzvI3H6llCZBxKxFlKWt1Pw1tkMK1" in str(err.value)
    root = tmp_path / "dtd" / "DTD-Synthetic"
    for category in ("Woven_001", "Mesh_114"):
        for i in range(3):
            save(root / category / "train/good" / f"{i:03d}.png", grey(16, 16))
        save(root / category / "test/good/000.png", grey(16, 16))
        for i in range(2):
            save(root / category / "test/bad" / f"{i:03d}.png", grey(16, 16))
            save(root / category / "ground_truth/bad" / f"{i:03d}_mask.png", np.full((16, 16), 255))
    manifest = prepare_dataset(spec | {"root": str(tmp_path / "dtd"), "categories": ["Woven_001", "Mesh_114"]}, tmp_path / "data")
    validate_manifest(manifest)
    for _, rows in manifest.groupby("category"):
        assert rows.groupby(["split", "defect_type"]).size().to_dict() == {("train", "good"): 3, ("test", "good"): 1, ("test", "bad"): 2}
        assert (rows.loc[rows["label"] == 1, "mask_path"] != "").all()
