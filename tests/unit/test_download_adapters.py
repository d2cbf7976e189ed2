"""Downloading adapters end to end on small archives in the real layouts, served over local HTTP.

Each test builds a miniature dataset archive (tar.xz for MVTec AD, tar for VisA, zip for
KolektorSDD and BTAD), points the source constant at it and runs the real code:
download -> verify -> extract -> manifest.
"""

from __future__ import annotations

import hashlib
import os
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sklearn.model_selection import train_test_split

from fsad.data import sources
from fsad.data.download import ChecksumError
from fsad.data.registry import dataset_categories, prepare_dataset
from tests.unit.range_server import RangeServer

RNG = np.random.default_rng(0)


def save_image(path: Path, size=(16, 12), value: int | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = RNG.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8) if value is None else np.full((size[1], size[0], 3), value, np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def save_mask(path: Path, values: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(values.astype(np.uint8)).save(path)
    return path


def publish(server: RangeServer, archive: Path, monkeypatch, attribute: str) -> sources.DownloadSource:
    """Serve ``archive`` and point ``sources.<attribute>`` at it with its true hash."""
    os.replace(archive, server.directory / archive.name)
    source = sources.DownloadSource(
        name=attribute,
        url=server.url(archive.name),
        sha256=hashlib.sha256((server.directory / archive.name).read_bytes()).hexdigest(),
        filename=archive.name,
        licence="test",
    )
    monkeypatch.setattr(sources, attribute, source)
    return source


def make_mvtec_tree(root: Path, categories: list[str]) -> None:
    for category in categories:
        for i in range(3):
            save_image(root / category / "train/good" / f"{i:03d}.png")
        save_image(root / category / "test/good/000.png")
        for defect in ("crack", "scratch"):
            save_image(root / category / "test" / defect / "000.png")
            save_mask(root / category / "ground_truth" / defect / "000_mask.png", np.full((12, 16), 255))


def tar_folder(folder: Path, archive: Path, mode: str) -> Path:
    with tarfile.open(archive, mode) as tar:
        for child in sorted(folder.iterdir()):
            tar.add(child, arcname=child.name)
    return archive


def zip_folder(folder: Path, archive: Path) -> Path:
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(folder.rglob("*")):
            zf.write(path, path.relative_to(folder).as_posix())
    return archive


MVTEC_SPEC = {"name": "mvtec_ad", "kind": "mvtec_ad", "categories": ["bottle", "screw"]}


@pytest.fixture
def mvtec_archive(tmp_path, server, monkeypatch):
    make_mvtec_tree(tmp_path / "mvtec_src", ["bottle", "screw"])
    (tmp_path / "mvtec_src" / "readme.txt").write_text("MVTec AD")
    return publish(server, tar_folder(tmp_path / "mvtec_src", tmp_path / "mvtec_anomaly_detection.tar.xz", "w:xz"), monkeypatch, "MVTEC_AD")


def test_mvtec_ad_downloads_verifies_extracts_and_builds_the_manifest(tmp_path, server, mvtec_archive):
    data_dir = tmp_path / "results/data/mvtec_ad"
    manifest = prepare_dataset(MVTEC_SPEC, data_dir)
    assert len(mvtec_archive.url) and server.requests == [("/mvtec_anomaly_detection.tar.xz", None)]
    assert (data_dir / "raw/downloads/mvtec_anomaly_detection.tar.xz.sha256-ok").exists()
    counts = manifest.groupby(["category", "split", "defect_type"]).size().to_dict()
    assert counts[("bottle", "train", "good")] == 3 and counts[("screw", "test", "crack")] == 1
    anomalies = manifest[manifest["label"] == 1]
    assert anomalies["mask_path"].map(lambda p: p.endswith("000_mask.png") and Path(p).is_file()).all()
    assert (manifest.loc[manifest["label"] == 0, "mask_path"] == "").all()
    assert manifest["image_path"].map(lambda p: Path(p).is_absolute() and "raw/extracted" in p).all()
    assert "bottle-test-crack-000" in set(manifest["image_id"])

    again = prepare_dataset(MVTEC_SPEC, data_dir)
    pd.testing.assert_frame_equal(again, manifest)
    assert len(server.requests) == 1


def test_mvtec_ad_extraction_killed_midway_is_redone_and_its_leftovers_removed(tmp_path, mvtec_archive):
    raw = tmp_path / "data/raw"
    stale = raw / ".extracted.extracting-killed"
    make_mvtec_tree(stale, ["bottle", "screw"])
    manifest = prepare_dataset(MVTEC_SPEC, tmp_path / "data")
    assert not stale.exists() and sorted(p.name for p in raw.iterdir()) == ["downloads", "extracted"]
    assert manifest["image_path"].map(lambda p: Path(p).is_relative_to(raw / "extracted")).all()


def test_mvtec_ad_files_already_at_root_are_used_without_download(tmp_path, server, mvtec_archive):
    make_mvtec_tree(tmp_path / "placed", ["bottle", "screw"])
    manifest = prepare_dataset(MVTEC_SPEC | {"root": str(tmp_path / "placed")}, tmp_path / "data")
    assert server.requests == []
    assert manifest["image_path"].map(lambda p: p.startswith(str(tmp_path / "placed"))).all()


def test_mvtec_ad_checksum_mismatch_leaves_nothing_extracted(tmp_path, server, mvtec_archive, monkeypatch):
    monkeypatch.setattr(sources, "MVTEC_AD", sources.DownloadSource("MVTec AD", mvtec_archive.url, "f" * 64, mvtec_archive.filename, "test"))
    data_dir = tmp_path / "data"
    with pytest.raises(ChecksumError, match=f"expected {'f' * 64}, got {mvtec_archive.sha256}"):
        prepare_dataset(MVTEC_SPEC, data_dir)
    assert sorted(p.name for p in (data_dir / "raw").iterdir()) == ["downloads"]
    assert sorted(p.name for p in (data_dir / "raw/downloads").iterdir()) == ["mvtec_anomaly_detection.tar.xz.lock"]


VISA_ROWS = [
    # object, split, label, image, mask
    ("candle", "train", "normal", "candle/Data/Images/Normal/0000.JPG", ""),
    ("candle", "train", "normal", "candle/Data/Images/Normal/0001.JPG", ""),
    ("candle", "test", "normal", "candle/Data/Images/Normal/0002.JPG", ""),
    ("candle", "test", "anomaly", "candle/Data/Images/Anomaly/000.JPG", "candle/Data/Masks/Anomaly/000.png"),
    ("pcb1", "train", "normal", "pcb1/Data/Images/Normal/0000.JPG", ""),
    ("pcb1", "test", "anomaly", "pcb1/Data/Images/Anomaly/000.JPG", "pcb1/Data/Masks/Anomaly/000.png"),
]


@pytest.fixture
def visa_archive(tmp_path, server, monkeypatch):
    src = tmp_path / "visa_src"
    for _, _, _, image, mask in VISA_ROWS:
        save_image(src / image)
        if mask:
            class_indexed = np.zeros((12, 16), np.uint8)
            class_indexed[2:5, 3:6], class_indexed[8:10, 10:14] = 1, 2
            save_mask(src / mask, class_indexed)
    (src / "split_csv").mkdir()
    table = pd.DataFrame(VISA_ROWS, columns=["object", "split", "label", "image", "mask"])
    table.to_csv(src / "split_csv/1cls.csv", index=False)
    return publish(server, tar_folder(src, tmp_path / "VisA_20220922.tar", "w"), monkeypatch, "VISA")


def test_visa_follows_1cls_csv_and_binarises_class_indexed_masks(tmp_path, visa_archive):
    data_dir = tmp_path / "data/visa"
    manifest = prepare_dataset({"name": "visa", "kind": "visa", "categories": ["candle", "pcb1"]}, data_dir)
    assert len(manifest) == len(VISA_ROWS)
    candle = manifest[manifest["category"] == "candle"].set_index("image_id")
    assert candle.loc["candle-train-good-0000", "split"] == "train"
    assert candle.loc["candle-test-good-0002", "label"] == 0
    assert candle.loc["candle-test-bad-000", ["label", "defect_type"]].tolist() == [1, "bad"]
    for mask_path in manifest.loc[manifest["label"] == 1, "mask_path"]:
        assert Path(mask_path).is_relative_to(data_dir.resolve() / "visa_masks")
        values = np.asarray(Image.open(mask_path))
        assert values.ndim == 2 and set(np.unique(values)) == {0, 255}
        assert (values == 255).sum() == 9 + 8
    assert (manifest.loc[manifest["label"] == 0, "mask_path"] == "").all()
    raw = data_dir / "raw/extracted"
    assert manifest["image_path"].map(lambda p: Path(p).is_relative_to(raw.resolve())).all()


def test_visa_writes_each_binarised_mask_once(tmp_path, visa_archive):
    data_dir = tmp_path / "data/visa"
    spec = {"name": "visa", "kind": "visa", "categories": ["candle"]}
    mask = Path(prepare_dataset(spec, data_dir).query("label == 1")["mask_path"].iloc[0])
    written = mask.stat().st_mtime_ns
    prepare_dataset(spec, data_dir)
    assert mask.stat().st_mtime_ns == written


SDD_DEFECT_THIRDS = {("kos01", "Part0"): [1], ("kos01", "Part1"): [], ("kos02", "Part0"): [0, 2], ("kos02", "Part1"): []}


@pytest.fixture
def sdd_archive(tmp_path, server, monkeypatch):
    src = tmp_path / "sdd_src" / "KolektorSDD"
    for (item, part), defect_thirds in SDD_DEFECT_THIRDS.items():
        save_image(src / item / f"{part}.jpg", size=(10, 31))
        label = np.zeros((31, 10), np.uint8)
        for third in defect_thirds:
            label[third * 10 + 4, 5] = 255
        save_mask(src / item / f"{part}_label.bmp", label)
    return publish(server, zip_folder(tmp_path / "sdd_src", tmp_path / "KolektorSDD.zip"), monkeypatch, "KOLEKTOR_SDD")


def test_sdd_cuts_each_part_into_thirds_labelled_by_their_masks(tmp_path, sdd_archive):
    data_dir = tmp_path / "data/sdd"
    spec = {"name": "sdd", "kind": "sdd"}
    assert dataset_categories(spec) == ["electrical_commutators"]
    manifest = prepare_dataset(spec, data_dir).set_index("image_id")
    assert len(manifest) == 3 * len(SDD_DEFECT_THIRDS)
    anomalous = {f"{item}_{part}_{t}" for (item, part), thirds in SDD_DEFECT_THIRDS.items() for t in thirds}
    stems = manifest["image_path"].map(lambda p: Path(p).stem)
    assert set(stems[manifest["label"] == 1]) == anomalous
    assert set(manifest.loc[manifest["label"] == 1, "split"]) == {"test"}
    assert set(manifest.loc[manifest["label"] == 1, "defect_type"]) == {"defect"}

    original = np.asarray(Image.open(data_dir / "raw/extracted/KolektorSDD/kos02/Part0.jpg").convert("RGB"))
    crop_rows = {0: slice(0, 10), 1: slice(10, 20), 2: slice(20, 31)}
    for third, rows in crop_rows.items():
        entry = manifest.loc[manifest["image_path"].str.endswith(f"kos02_Part0_{third}.png")].iloc[0]
        np.testing.assert_array_equal(np.asarray(Image.open(entry["image_path"])), original[rows])
        if entry["label"]:
            mask = np.asarray(Image.open(entry["mask_path"]))
            assert mask.shape == original[rows].shape[:2] and set(np.unique(mask)) == {0, 255}

    normal_names = [f"{item}_{part}_{t}" for (item, part) in SDD_DEFECT_THIRDS for t in range(3)]
    normal_names = [n for n in normal_names if n not in anomalous]
    train_names, _ = train_test_split(normal_names, test_size=0.25, random_state=42)
    assert set(stems[manifest["split"] == "train"]) == set(train_names)
    assert manifest["image_path"].map(lambda p: Path(p).is_relative_to((data_dir / "sdd_crops").resolve())).all()


def test_sdd_crops_are_written_once(tmp_path, sdd_archive):
    data_dir = tmp_path / "data/sdd"
    first = Path(prepare_dataset({"name": "sdd", "kind": "sdd"}, data_dir)["image_path"].iloc[0])
    written = first.stat().st_mtime_ns
    prepare_dataset({"name": "sdd", "kind": "sdd"}, data_dir)
    assert first.stat().st_mtime_ns == written
    assert [p.name for p in (data_dir / "sdd_crops").parent.iterdir() if p.name.startswith(".")] == []


@pytest.fixture
def btad_archive(tmp_path, server, monkeypatch):
    src = tmp_path / "btad_src" / "BTech_Dataset_transformed"
    for product in ("01", "02", "03"):
        save_image(src / product / "train/ok/0000.bmp")
        save_image(src / product / "train/ok/0001.png")
        save_image(src / product / "test/ok/0002.bmp")
        save_image(src / product / "test/ko/0003.bmp")
        save_mask(src / product / "ground_truth/ko/0003.png", np.full((12, 16), 255))
    return publish(server, zip_folder(tmp_path / "btad_src", tmp_path / "btad.zip"), monkeypatch, "BTAD")


def test_btad_maps_ok_to_good_and_reads_bmp_in_place(tmp_path, btad_archive):
    manifest = prepare_dataset({"name": "btad", "kind": "btad"}, tmp_path / "data/btad")
    assert sorted(manifest["category"].unique()) == ["01", "02", "03"]
    counts = manifest.groupby(["split", "defect_type"]).size().to_dict()
    assert counts == {("test", "good"): 3, ("test", "ko"): 3, ("train", "good"): 6}
    anomaly = manifest[manifest["label"] == 1].iloc[0]
    assert anomaly["image_path"].endswith("0003.bmp") and anomaly["mask_path"].endswith("ground_truth/ko/0003.png")


MPDD_SPEC = {"name": "mpdd", "kind": "mpdd"}


def test_mpdd_missing_says_where_to_download_and_where_to_place(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        prepare_dataset(MPDD_SPEC, tmp_path / "data/mpdd")
    message = str(err.value)
    assert "https://github.com/stepanje/MPDD" in message and "SharePoint" in message
    assert str((tmp_path / "data/mpdd/raw").resolve()) in message
    assert "<part>/train/good" in message and "bracket_black" in message and "tubes" in message


def test_mpdd_placed_by_hand_is_read_like_a_folder(tmp_path):
    make_mvtec_tree(tmp_path / "mpdd" / "MPDD", ["connector", "tubes"])
    manifest = prepare_dataset(MPDD_SPEC | {"root": str(tmp_path / "mpdd"), "categories": ["connector", "tubes"]}, tmp_path / "data")
    assert sorted(manifest["category"].unique()) == ["connector", "tubes"] and len(manifest) == 2 * 6


def test_folder_reads_a_hand_made_tree_with_masks_and_mixed_extensions(tmp_path):
    root = tmp_path / "my_parts"
    save_image(root / "widget/train/good/a.jpg")
    save_image(root / "widget/train/good/b.PNG")
    save_image(root / "widget/test/good/c.png")
    save_image(root / "widget/test/dent/d.png")
    save_mask(root / "widget/ground_truth/dent/d_mask.png", np.full((12, 16), 255))
    save_image(root / "gadget/train/good/a.png")
    save_image(root / "gadget/test/stain/e.bmp")  # no ground_truth folder: no masks
    (root / "notes").mkdir()
    spec = {"name": "parts", "kind": "folder", "root": str(root)}
    assert dataset_categories(spec) == ["gadget", "widget"]
    manifest = prepare_dataset(spec, tmp_path / "data").set_index("image_id")
    assert len(manifest) == 6
    assert manifest.loc["widget-test-dent-d", "mask_path"] == str((root / "widget/ground_truth/dent/d_mask.png").resolve())
    assert manifest.loc["gadget-test-stain-e", ["label", "mask_path"]].tolist() == [1, ""]
    assert manifest.loc["widget-train-good-b", "split"] == "train"


def test_folder_errors_name_the_missing_root_and_the_missing_mask(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"{tmp_path / 'nowhere'}: .*root not found"):
        dataset_categories({"name": "parts", "kind": "folder", "root": str(tmp_path / "nowhere")})
    root = tmp_path / "parts"
    save_image(root / "widget/train/good/a.png")
    save_image(root / "widget/test/dent/d.png")
    (root / "widget/ground_truth/dent").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="no mask d_mask.png"):
        prepare_dataset({"name": "parts", "kind": "folder", "root": str(root)}, tmp_path / "data")


# --- BMAD (OCT2017, RESC): one zip of several sets, each set's own train/valid/test folders --------------------------


@pytest.fixture
def bmad_archive(tmp_path, server, monkeypatch):
    src = tmp_path / "bmad_src" / "BMAD"
    oct_set, resc = src / "Retina_OCT2017", src / "Retina_RESC"
    for i in range(4):
        save_image(oct_set / "train/good" / f"normal_{i}.png")
    save_image(oct_set / "valid/good/val_n.png")  # BMAD's validation split: not read
    save_image(oct_set / "valid/Ungood/val_a.png")
    for stem in ("NORMAL-1", "NORMAL-2"):
        save_image(oct_set / "test/good" / f"{stem}.png")
    for stem in ("CNV-1", "DME-1", "DRUSEN-1"):
        save_image(oct_set / "test/Ungood" / f"{stem}.png")
    for i in range(3):
        save_image(resc / "train/good" / f"{i:04d}.png")
    save_image(resc / "test/good/img/n0.png")
    save_mask(resc / "test/good/label/n0.png", np.zeros((12, 16)))
    for i, stem in enumerate(("e0", "e1")):
        save_image(resc / "test/Ungood/img" / f"{stem}.png")
        mask = np.zeros((12, 16))
        mask[i : i + 3, 2:6] = 255
        save_mask(resc / "test/Ungood/label" / f"{stem}.png", mask)
    save_image(resc / "valid/Ungood/img/v0.png")
    save_mask(resc / "valid/Ungood/label/v0.png", np.full((12, 16), 255))
    return publish(server, zip_folder(tmp_path / "bmad_src", tmp_path / "bmad.zip"), monkeypatch, "BMAD")


def test_oct2017_and_resc_share_one_verified_bmad_download_and_keep_its_train_test_partition(tmp_path, server, bmad_archive):
    root = tmp_path / "bmad_raw"  # both datasets pointed at one root: one download
    oct2017 = prepare_dataset({"name": "oct2017", "kind": "oct2017", "root": str(root)}, tmp_path / "data/oct2017")
    assert server.requests == [("/bmad.zip", None)] and (root / "downloads/bmad.zip.sha256-ok").is_file()
    assert dataset_categories({"name": "oct2017", "kind": "oct2017"}) == ["retina"]
    assert oct2017.groupby(["split", "defect_type"]).size().to_dict() == {
        ("test", "good"): 2, ("test", "retinal_disease"): 3, ("train", "good"): 4,
    }  # fmt: skip
    assert sorted(Path(p).stem for p in oct2017.loc[oct2017["label"] == 1, "image_path"]) == ["CNV-1", "DME-1", "DRUSEN-1"]
    assert (oct2017["mask_path"] == "").all() and not oct2017["image_path"].str.contains("/valid/").any()

    resc = prepare_dataset({"name": "resc", "kind": "resc", "root": str(root)}, tmp_path / "data/resc")
    assert len(server.requests) == 1  # extracted once, read in place
    assert resc.groupby(["split", "defect_type"]).size().to_dict() == {("test", "good"): 1, ("test", "retinal_edema"): 2, ("train", "good"): 3}
    anomalous = resc[resc["label"] == 1]
    for image, mask in zip(anomalous["image_path"], anomalous["mask_path"]):
        assert Path(mask).parent.name == "label" and Path(mask).name == Path(image).name and Path(image).parent.name == "img"
    assert (resc.loc[resc["label"] == 0, "mask_path"] == "").all() and not resc["image_path"].str.contains("/valid/").any()
    mask_rows = [int(np.nonzero(np.asarray(Image.open(m)).any(axis=1))[0][0]) for m in sorted(anomalous["mask_path"])]
    assert mask_rows == [0, 1]  # e0's defect starts on row 0, e1's on row 1: each image has its own mask


def test_resc_without_a_mask_names_the_image_and_the_folder(tmp_path):
    resc = tmp_path / "placed/Retina_RESC"
    save_image(resc / "train/good/0.png")
    save_image(resc / "test/good/img/1.png")
    save_image(resc / "test/Ungood/img/2.png")
    (resc / "test/Ungood/label").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=r"2\.png: no mask 2\.png in .*Ungood/label"):
        prepare_dataset({"name": "resc", "kind": "resc", "root": str(tmp_path / "placed")}, tmp_path / "data")
