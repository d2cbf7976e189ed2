"""Galleries pick the scorer's clearest successes and its mistakes and draw query, map and ground truth."""

from __future__ import annotations

import h5py
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from fsad.evaluation.gallery import pick_examples, write_gallery
from fsad.evaluation.tables import RANDOM_WEIGHTS_NOTE

MAP_SIZE = 32


def scores_frame() -> pd.DataFrame:
    # anomalies a0..a3 scored 0.9, 0.8, 0.2, 0.6; normals n0..n3 scored 0.1, 0.3, 0.7, 0.4
    return pd.DataFrame({
        "image_id": ["a0", "a1", "a2", "a3", "n0", "n1", "n2", "n3"],
        "label": [1, 1, 1, 1, 0, 0, 0, 0],
        "score": [0.9, 0.8, 0.2, 0.6, 0.1, 0.3, 0.7, 0.4],
    })


def test_best_are_high_scored_anomalies_and_low_scored_normals():
    picked = pick_examples(scores_frame(), n=2)
    best = picked[picked["verdict"] == "best"]
    assert list(best["image_id"]) == ["a0", "a1", "n0", "n1"]


def test_worst_are_low_scored_anomalies_and_high_scored_normals():
    picked = pick_examples(scores_frame(), n=2)
    worst = picked[picked["verdict"] == "worst"]
    assert list(worst["image_id"]) == ["a2", "a3", "n2", "n3"]


def test_an_image_is_shown_once_when_a_category_has_few_images():
    picked = pick_examples(scores_frame(), n=3)
    assert picked["image_id"].is_unique
    assert set(picked["image_id"]) == set(scores_frame()["image_id"])
    assert picked.set_index("image_id").loc["a3", "verdict"] == "best"  # third-best anomaly before its worst turn


def write_inputs(tmp_path, with_maps: bool = True, weights: str = "random (fallback: test)"):
    """A score file, its maps (a bright square where the defect is) and a manifest with masks for two anomalies."""
    scores = scores_frame()
    rng = np.random.default_rng(0)
    paths, masks = [], []
    for image_id, label in zip(scores["image_id"], scores["label"]):
        image = tmp_path / f"{image_id}.png"
        Image.fromarray(rng.integers(0, 255, (48, 48, 3), dtype=np.uint8)).save(image)
        paths.append(str(image))
        mask = ""
        if image_id in ("a0", "a2"):
            mask_image = np.zeros((48, 48), np.uint8)
            mask_image[10:20, 10:20] = 255
            mask = str(tmp_path / f"{image_id}_mask.png")
            Image.fromarray(mask_image).save(mask)
        masks.append(mask)
    scores["image_path"] = paths
    scores["defect_type"] = np.where(scores["label"] == 1, "spot", "good")
    scores["weights"] = weights
    scores.to_parquet(tmp_path / "run0.parquet")
    maps = np.zeros((len(scores), MAP_SIZE, MAP_SIZE), np.float16)
    maps[:, 6:14, 6:14] = scores["score"].to_numpy()[:, None, None]
    with h5py.File(tmp_path / "run0.maps.h5", "w") as h5:
        # stored in reverse order: the gallery must look maps up by image id, not by row
        h5.create_dataset("image_ids", data=np.array(scores["image_id"][::-1], dtype=object), dtype=h5py.string_dtype())
        if with_maps:
            h5.create_dataset("maps", data=maps[::-1])
    manifest = pd.DataFrame({"image_id": scores["image_id"], "mask_path": masks})
    return tmp_path / "run0.parquet", tmp_path / "run0.maps.h5", manifest


def test_gallery_png_has_one_row_per_example(tmp_path):
    scores, maps, manifest = write_inputs(tmp_path)
    out = write_gallery(scores, maps, manifest, tmp_path / "plots" / "gallery.png", "winclip / synthetic / carpet / k1", n=1)
    with Image.open(out) as image:
        assert image.format == "PNG"
        width, height = image.size
    # 4 rows (best/worst x anomalous/normal) of 3 panels: taller than a single row, three panels wide
    assert width > 500 and height > 600
    assert not list((tmp_path / "plots").glob(".gallery.png*")), "no temporary file is left beside the figure"


def test_gallery_uses_the_map_of_each_image_id(tmp_path, monkeypatch):
    from fsad.evaluation import gallery

    seen = {}
    monkeypatch.setattr(gallery, "gallery_figure", lambda examples, maps, masks, path, title: seen.update(maps=maps, masks=masks))
    scores, maps, manifest = write_inputs(tmp_path)
    write_gallery(scores, maps, manifest, tmp_path / "gallery.png", "t", n=1)
    assert {i: float(m.max()) for i, m in seen["maps"].items()} == pytest.approx({"a0": 0.9, "n0": 0.1, "a2": 0.2, "n2": 0.7}, abs=1e-3)
    assert seen["masks"]["a0"].endswith("a0_mask.png") and seen["masks"]["n0"] == ""


def test_gallery_of_a_score_file_without_maps_names_the_file(tmp_path):
    scores, maps, manifest = write_inputs(tmp_path, with_maps=False)
    with pytest.raises(ValueError, match="run0.maps.h5.*no anomaly maps"):
        write_gallery(scores, maps, manifest, tmp_path / "gallery.png", "t")


@pytest.mark.parametrize("weights, labelled", [("random (fallback: test)", True), ("laion400m_e31", False)])
def test_gallery_title_says_when_the_score_file_used_random_weights(tmp_path, monkeypatch, weights, labelled):
    from fsad.evaluation import gallery

    titles = []
    monkeypatch.setattr(gallery, "gallery_figure", lambda examples, maps, masks, path, title: titles.append(title))
    scores, maps, manifest = write_inputs(tmp_path, weights=weights)
    write_gallery(scores, maps, manifest, tmp_path / "gallery.png", "winclip / synthetic / carpet / k1", n=1)
    assert titles[0].startswith("winclip / synthetic / carpet / k1")
    assert (RANDOM_WEIGHTS_NOTE in titles[0]) is labelled
