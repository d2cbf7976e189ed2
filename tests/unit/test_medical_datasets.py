"""Medical datasets placed by hand: layouts, labels, masks, the test-only and InCTRL protocols, missing-file messages."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.model_selection import train_test_split

from fsad.data.manifest import validate_manifest
from fsad.data.registry import dataset_categories, get_adapter, prepare_dataset
from fsad.data.splits import draw_pool, draw_split

RNG = np.random.default_rng(4)


def save(path: Path, pixels: np.ndarray | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(RNG.integers(0, 255, (12, 12), dtype=np.uint8) if pixels is None else pixels.astype(np.uint8)).save(path)
    return path


def stems(rows) -> list[str]:
    return sorted(Path(p).stem for p in rows["image_path"])


def brain_tree(root: Path, n_no: int = 8, n_yes: int = 5) -> Path:
    for i in range(n_no):
        save(root / "brain_tumor_dataset" / "no" / f"No{i:02d}.jpg")
    for i in range(n_yes):
        save(root / "brain_tumor_dataset" / "yes" / f"Y{i:02d}.jpg")
    return root


def test_brainmri_test_only_puts_every_image_in_test_and_runs_only_zero_shot(tmp_path):
    root = brain_tree(tmp_path / "brainmri")
    spec = {"name": "brainmri", "kind": "brainmri", "root": str(root)}
    assert dataset_categories(spec) == ["brain"] and not get_adapter("brainmri").has_masks
    manifest = prepare_dataset(spec, tmp_path / "data")
    validate_manifest(manifest)
    assert set(manifest["split"]) == {"test"}
    assert manifest.groupby("defect_type").size().to_dict() == {"good": 8, "tumor": 5}
    pool = draw_pool(manifest, dataset="brainmri", category="brain", seed=0, max_test=None, normal_pool=8, anomalous_pool=0)
    assert len(draw_split(pool, {"name": "zs", "normal_shots": 0, "anomalous_shots": 0, "validation_normals": 0}, 0)["test"]) == 13
    with pytest.raises(ValueError, match="no normal training images"):
        draw_split(pool, {"name": "k2", "normal_shots": 2, "anomalous_shots": 0, "validation_normals": 0}, 0)


def test_brainmri_inctrl_protocol_splits_the_normals_75_25(tmp_path):
    root = brain_tree(tmp_path / "brainmri")
    manifest = prepare_dataset({"name": "b", "kind": "brainmri", "root": str(root), "protocol": "inctrl"}, tmp_path / "data")
    normal = manifest[manifest["label"] == 0]
    # 8 normals, test_size 0.25: 2 test, 6 train
    assert normal["split"].value_counts().to_dict() == {"train": 6, "test": 2}
    train, _ = train_test_split([f"No{i:02d}" for i in range(8)], test_size=0.25, random_state=42)
    assert stems(normal[normal["split"] == "train"]) == sorted(train)
    assert set(manifest.loc[manifest["label"] == 1, "split"]) == {"test"}


def test_br35h_reads_no_and_yes(tmp_path):
    root = tmp_path / "br35h"
    for i in range(3):
        save(root / "no" / f"no{i}.jpg")
        save(root / "yes" / f"y{i}.jpg")
    save(root / "pred" / "pred0.jpg")  # Br35H's unlabelled folder is not read
    manifest = prepare_dataset({"name": "br35h", "kind": "br35h", "root": str(root)}, tmp_path / "data")
    assert manifest.groupby(["split", "label"]).size().to_dict() == {("test", 0): 3, ("test", 1): 3}


def test_headct_follows_labels_csv_and_its_inctrl_split(tmp_path):
    root = tmp_path / "headct"
    labels = [0, 1, 0, 0, 1, 0, 1, 0]
    (root).mkdir()
    (root / "labels.csv").write_text("id, hemorrhage\n" + "".join(f"{i}, {y}\n" for i, y in enumerate(labels)))
    for i in range(len(labels)):
        save(root / "head_ct" / "head_ct" / f"{i:03d}.png")
    manifest = prepare_dataset({"name": "headct", "kind": "headct", "root": str(root)}, tmp_path / "a")
    assert dataset_categories({"name": "headct", "kind": "headct"}) == ["brain"]
    assert stems(manifest[manifest["label"] == 1]) == ["001", "004", "006"] and set(manifest["split"]) == {"test"}
    assert set(manifest.loc[manifest["label"] == 1, "defect_type"]) == {"hemorrhage"}
    inctrl = prepare_dataset({"name": "headct", "kind": "headct", "root": str(root), "protocol": "inctrl"}, tmp_path / "b")
    train, _ = train_test_split(["000", "002", "003", "005", "007"], test_size=0.25, random_state=42)  # labels.csv order
    assert stems(inctrl[inctrl["split"] == "train"]) == sorted(train) and len(train) == 3


def test_lag_reads_the_image_folders_of_both_classes_and_not_the_attention_maps(tmp_path):
    root = tmp_path / "lag" / "LAG_database_part_1"
    for i in range(4):
        save(root / "non_glaucoma" / "image" / f"{i}.jpg")
        save(root / "non_glaucoma" / "attention_map" / f"{i}.jpg")
    for i in (10, 11):
        save(root / "suspicious_glaucoma" / "image" / f"{i}.jpg")
        save(root / "suspicious_glaucoma" / "attention_map" / f"{i}.jpg")
    spec = {"name": "lag", "kind": "lag", "root": str(tmp_path / "lag")}
    assert dataset_categories(spec) == ["fundus"] and not get_adapter("lag").has_masks
    manifest = prepare_dataset(spec, tmp_path / "data")
    assert manifest.groupby(["split", "defect_type"]).size().to_dict() == {("test", "glaucoma"): 2, ("test", "good"): 4}
    assert stems(manifest[manifest["label"] == 1]) == ["10", "11"] and (manifest["mask_path"] == "").all()
    assert manifest["image_path"].map(lambda p: Path(p).parent.name == "image").all()
    pool = draw_pool(manifest, dataset="lag", category="fundus", seed=0, max_test=None, normal_pool=4, anomalous_pool=0)
    assert len(draw_split(pool, {"name": "zs", "normal_shots": 0, "anomalous_shots": 0, "validation_normals": 0}, 0)["test"]) == 6
    with pytest.raises(ValueError, match="no normal training images"):
        draw_split(pool, {"name": "k1", "normal_shots": 1, "anomalous_shots": 0, "validation_normals": 0}, 0)


@pytest.mark.parametrize(
    ("kind", "category", "images", "masks", "mask_name"),
    [
        ("cvc_clinicdb", "colon", "images", "masks", "{}.png"),
        ("cvc_colondb", "colon", "images", "masks", "{}.png"),
        ("kvasir", "colon", "images", "masks", "{}.jpg"),
        ("tn3k", "thyroid", "test-image", "test-mask", "{}.jpg"),
        ("endo", "colon", "images", "masks", "{}.png"),
        ("isic2016", "skin", "ISBI2016_ISIC_Part1_Test_Data", "ISBI2016_ISIC_Part1_Test_GroundTruth", "{}_Segmentation.png"),
    ],
)
def test_segmentation_sets_are_test_only_anomalies_each_with_its_own_mask(tmp_path, kind, category, images, masks, mask_name):
    root = tmp_path / kind / "unpacked"
    for i, stem in enumerate(["a1", "b2", "c3"]):
        save(root / images / f"{stem}.png" if kind != "isic2016" else root / images / f"{stem}.jpg")
        mask = np.zeros((12, 12), np.uint8)
        mask[i : i + 2, :] = 255
        save(root / masks / mask_name.format(stem), mask)
    spec = {"name": kind, "kind": kind, "root": str(tmp_path / kind)}
    assert dataset_categories(spec) == [category] and get_adapter(kind).has_masks
    manifest = prepare_dataset(spec, tmp_path / "data")
    validate_manifest(manifest)
    assert stems(manifest) == ["a1", "b2", "c3"] and set(manifest["split"]) == {"test"} and set(manifest["label"]) == {1}
    for image, mask in zip(manifest["image_path"], manifest["mask_path"]):
        assert Path(mask).name == mask_name.format(Path(image).stem)
    (root / masks / mask_name.format("b2")).unlink()
    with pytest.raises(FileNotFoundError, match="b2"):
        prepare_dataset(spec, tmp_path / "data2")


@pytest.mark.parametrize(
    ("kind", "page"),
    [
        ("brainmri", "kaggle.com/datasets/navoneel/brain-mri-images-for-brain-tumor-detection"),
        ("br35h", "kaggle.com/datasets/ahmedhamada0/brain-tumor-detection"),
        ("headct", "kaggle.com/datasets/felipekitamura/head-ct-hemorrhage"),
        ("isic2016", "challenge.isic-archive.com/data"),
        ("cvc_clinicdb", "polyp.grand-challenge.org/CVCClinicDB"),
        ("cvc_colondb", "polyp.grand-challenge.org/CVCColonDB"),
        ("kvasir", "datasets.simula.no/kvasir-seg"),
        ("tn3k", "github.com/haifangong/TRFE-Net-for-thyroid-nodule-segmentation"),
        ("endo", "endotect.com"),
        ("lag", "github.com/smilell/AG-CNN"),
    ],
)
def test_missing_medical_sets_name_their_source_page_and_the_folder(tmp_path, kind, page):
    with pytest.raises(FileNotFoundError) as err:
        prepare_dataset({"name": kind, "kind": kind}, tmp_path / "data")
    assert page in str(err.value) and str((tmp_path / "data/raw").resolve()) in str(err.value)
