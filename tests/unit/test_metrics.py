"""Metrics pinned by hand-computed cases and cross-checked against torchmetrics and anomalib on random inputs."""

from __future__ import annotations

from types import SimpleNamespace

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
from anomalib.metrics import AUPRO, AUROC, F1Max
from PIL import Image
from scipy import ndimage
from torchmetrics.classification import BinaryAUROC, BinaryAveragePrecision, BinaryPrecisionRecallCurve

from fsad.data.images import load_masks
from fsad.score_files import write_score_table
from fsad.evaluation.collect import METRICS_COLUMNS, combine_metrics, evaluate_run, read_metrics, write_metrics
from fsad.evaluation.metrics import (
    OneClassWarning,
    evaluate_scores,
    f1_max,
    image_ap,
    image_auroc,
    label_regions,
    pixel_auroc,
    pixel_pro,
    pro_curve,
)


def random_image_case(seed: int, n: int = 60) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    labels[:2] = [0, 1]
    scores = rng.normal(size=n) + labels * 0.8
    scores[5:9] = scores[4]  # ties must be handled like the references handle them
    return scores, labels


def blob_case(seed: int, n: int = 8, size: int = 48) -> tuple[np.ndarray, np.ndarray]:
    """Smooth random maps, half of the images with one to three disc-shaped defects that raise the map a little."""
    rng = np.random.default_rng(seed)
    yy, xx = np.ogrid[:size, :size]
    masks = np.zeros((n, size, size), dtype=bool)
    for index in range(n // 2):
        for _ in range(rng.integers(1, 4)):
            cy, cx = rng.integers(6, size - 6, 2)
            radius = rng.integers(2, 7)
            masks[index] |= (yy - cy) ** 2 + (xx - cx) ** 2 < radius**2
    maps = ndimage.gaussian_filter(rng.random((n, size, size)) + 0.3 * masks, sigma=(0, 1.5, 1.5)).astype(np.float32)
    return maps, masks


def anomalib_value(metric, **fields) -> float:
    metric.update(SimpleNamespace(**{name: torch.from_numpy(np.asarray(value)) for name, value in fields.items()}))
    return float(metric.compute())


# --- hand-computed cases ------------------------------------------------------------------------


def test_image_metrics_of_a_tiny_ranking_match_hand_computation():
    labels = np.array([0, 0, 1, 1])
    scores = np.array([0.1, 0.4, 0.35, 0.8])
    # pairs (anomalous > normal): 0.35>0.1, 0.8>0.1, 0.8>0.4 -> 3 of 4
    assert image_auroc(scores, labels) == pytest.approx(0.75)
    # ranks: 0.8 (tp, P=1, R=.5), 0.4 (fp), 0.35 (tp, P=2/3, R=1) -> AP = .5*1 + .5*2/3
    assert image_ap(scores, labels) == pytest.approx(0.5 + 1 / 3)
    # best threshold 0.35: P=2/3, R=1 -> F1 = 0.8 (threshold 0.8 gives 2/3)
    assert f1_max(scores, labels) == pytest.approx(0.8)


def test_pro_of_a_perfect_map_is_one_and_of_an_inverted_map_is_zero():
    masks = np.zeros((2, 8, 8), dtype=bool)
    masks[0, 1:3, 1:3] = True
    masks[1, 5:8, 4:8] = True
    assert pixel_pro(masks.astype(float), masks) == pytest.approx(1.0)
    assert pixel_pro(1.0 - masks, masks) == pytest.approx(0.0)


def test_pro_averages_regions_not_pixels():
    # One big region (16 px) found, one small region (1 px) missed until every normal pixel is flagged:
    # below FPR 0.3 the mean region overlap is 0.5, whatever the pixel counts say.
    masks = np.zeros((1, 10, 10), dtype=bool)
    masks[0, :4, :4] = True
    masks[0, 9, 9] = True
    maps = np.where(masks, 0.0, 0.5)
    maps[0, :4, :4] = 1.0
    assert pixel_pro(maps, masks, fpr_limit=0.3) == pytest.approx(0.5)


def test_pro_interpolates_the_curve_at_the_fpr_limit():
    # The defect pixel ties with a normal pixel at 0.8, so the curve runs straight from (FPR 0.25, PRO 0) to
    # (0.5, 1): at the limit 0.3 it is 0.2, and the area up to 0.3 is the triangle 0.5 * 0.05 * 0.2.
    masks = np.array([[[True, False, False, False, False]]])
    maps = np.array([[[0.8, 0.9, 0.8, 0.1, 0.2]]])
    fpr, pro = pro_curve(maps, masks)
    assert list(zip(fpr.tolist(), pro.tolist()))[:3] == [(0.0, 0.0), (0.25, 0.0), (0.5, 1.0)]
    assert pixel_pro(maps, masks, fpr_limit=0.3) == pytest.approx(0.5 * 0.05 * 0.2 / 0.3)


def test_fixed_thresholds_at_every_map_value_reproduce_the_exact_curve():
    masks = np.zeros((2, 6, 6), dtype=bool)
    masks[0, 1:3, 1:4] = True
    masks[1, 4:6, 0:2] = True
    maps = np.random.default_rng(0).integers(0, 5, (2, 6, 6)) / 4 + 0.25 * masks  # values on a 1/4 grid
    assert pixel_pro(maps, masks, num_thresholds=6) == pytest.approx(pixel_pro(maps, masks))


def test_regions_use_eight_connectivity_by_default_and_never_cross_images():
    masks = np.zeros((2, 4, 4), dtype=bool)
    masks[0, 0, 0] = masks[0, 1, 1] = True  # diagonal neighbours
    masks[1, 0, 0] = True  # same position in the next image
    assert label_regions(masks)[1] == 2
    assert label_regions(masks, connectivity=4)[1] == 3


def test_one_class_gives_nan_with_a_warning():
    with pytest.warns(OneClassWarning, match="image AUROC"):
        assert np.isnan(image_auroc(np.array([0.1, 0.2]), np.array([0, 0])))
    with pytest.warns(OneClassWarning, match="pixel PRO"):
        assert np.isnan(pixel_pro(np.random.rand(2, 4, 4), np.zeros((2, 4, 4), dtype=bool)))


def test_nan_scores_are_an_error_not_a_metric():
    with pytest.raises(ValueError, match="NaN"):
        image_auroc(np.array([0.1, np.nan]), np.array([0, 1]))


# --- cross-checks against independent implementations ------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_image_metrics_agree_with_torchmetrics_and_anomalib(seed):
    scores, labels = random_image_case(seed)
    preds, target = torch.from_numpy(scores), torch.from_numpy(labels)
    # AUROC and AP are exact rank statistics: only float rounding may differ.
    assert image_auroc(scores, labels) == pytest.approx(float(BinaryAUROC()(preds, target)), abs=1e-6)
    assert image_auroc(scores, labels) == pytest.approx(anomalib_value(AUROC(fields=["pred_score", "gt_label"]), pred_score=scores, gt_label=labels), abs=1e-6)
    assert image_ap(scores, labels) == pytest.approx(float(BinaryAveragePrecision()(preds, target)), abs=1e-6)
    precision, recall, _ = BinaryPrecisionRecallCurve()(preds, target)
    reference_f1 = float(torch.nan_to_num(2 * precision * recall / (precision + recall)).max())
    assert f1_max(scores, labels) == pytest.approx(reference_f1, abs=1e-6)
    assert f1_max(scores, labels) == pytest.approx(anomalib_value(F1Max(fields=["pred_score", "gt_label"]), pred_score=scores, gt_label=labels), abs=1e-6)


@pytest.mark.parametrize("seed", [0, 1])
def test_pixel_auroc_agrees_with_torchmetrics(seed):
    maps, masks = blob_case(seed)
    reference = float(BinaryAUROC()(torch.from_numpy(maps).flatten(), torch.from_numpy(masks).flatten().int()))
    assert pixel_auroc(maps, masks) == pytest.approx(reference, abs=1e-6)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("fpr_limit", [0.3, 0.05])
def test_pro_agrees_with_anomalib_aupro(seed, fpr_limit):
    maps, masks = blob_case(seed)
    reference = anomalib_value(AUPRO(fields=["anomaly_map", "gt_mask"], fpr_limit=fpr_limit), anomaly_map=maps, gt_mask=masks)
    # Same definition and every distinct score a threshold on both sides: only float32 vs float64 sums differ.
    assert pixel_pro(maps, masks, fpr_limit) == pytest.approx(reference, abs=1e-6)
    # 200 evenly spaced thresholds (the AnomalyCLIP/PromptAD habit) move points of the curve by at most one
    # threshold step; on these smooth maps that shifts the normalised area by well under 1e-2.
    assert pixel_pro(maps, masks, fpr_limit, num_thresholds=200) == pytest.approx(reference, abs=1e-2)


# --- evaluate_scores and masks -----------------------------------------------------------------


def test_evaluate_scores_names_image_pixel_and_sub_score_metrics():
    maps, masks = blob_case(3)
    labels = masks.any(axis=(1, 2)).astype(int)
    scores = pd.DataFrame(
        {"image_id": [f"i{i}" for i in range(len(labels))], "label": labels, "score": maps.max(axis=(1, 2)),
         "zero_shot": -maps.mean(axis=(1, 2)), "weights": "random", "flagged": False}
    )
    values = evaluate_scores(scores, maps, masks, fpr_limit=0.3)
    assert set(values) == {"image_auroc", "image_ap", "image_f1max", "image_auroc:zero_shot", "pixel_auroc", "pixel_pro"}
    assert values["image_auroc:zero_shot"] == pytest.approx(image_auroc(scores["zero_shot"].to_numpy(), labels))
    assert "pixel_pro" not in evaluate_scores(scores, maps, None)


def write_mask(path, array) -> str:
    Image.fromarray(array.astype(np.uint8) * 255).save(path)
    return str(path)


def test_load_masks_resizes_nearest_and_gives_normals_empty_masks(tmp_path):
    mask = np.zeros((8, 8), dtype=bool)
    mask[:4, :4] = True
    masks = load_masks([write_mask(tmp_path / "m.png", mask), ""], [1, 0], size=4)
    assert masks.dtype == bool and masks.shape == (2, 4, 4)
    assert masks[0].sum() == 4 and masks[0, :2, :2].all()
    assert not masks[1].any()


def test_load_masks_without_a_mask_for_an_anomalous_image_skips_pixel_metrics(tmp_path):
    assert load_masks(["", ""], [0, 1], size=4) is None


def test_load_masks_names_a_missing_mask_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.png"):
        load_masks([str(tmp_path / "missing.png")], [1], size=4)


# --- evaluate_run and the metrics table ---------------------------------------------------------


def scored_run(tmp_path, with_maps: bool = True):
    maps, masks = blob_case(4, n=6, size=16)
    ids = [f"img{i}" for i in range(6)]
    labels = masks.any(axis=(1, 2)).astype(int)
    mask_paths = [write_mask(tmp_path / f"{i}.png", m) if m.any() else "" for i, m in zip(ids, masks)]
    manifest = pd.DataFrame({"image_id": ids, "category": "c", "split": "test", "label": labels, "defect_type": "d",
                             "image_path": [str(tmp_path / f"{i}.jpg") for i in ids], "mask_path": mask_paths})
    manifest.to_csv(tmp_path / "manifest.csv", index=False)
    scores = pd.DataFrame({"image_id": ids[::-1], "image_path": "", "label": labels[::-1], "defect_type": "d",
                           "score": maps.max(axis=(1, 2))[::-1], "weights": "random (fallback: test)"})
    keys = {"scorer": "winclip_x", "method": "winclip", "dataset": "ds", "category": "c", "setting": "k1", "run": 2,
            "weights": "random (fallback: test)"}
    write_score_table(scores, keys, tmp_path / "run0.parquet")
    with h5py.File(tmp_path / "run0.maps.h5", "w") as h5:
        h5.create_dataset("image_ids", data=np.array(ids, dtype=object), dtype=h5py.string_dtype())
        if with_maps:
            h5.create_dataset("maps", data=maps.astype(np.float16))
    return maps, masks


def test_evaluate_run_aligns_maps_by_image_id_and_records_weights(tmp_path):
    maps, masks = scored_run(tmp_path)
    rows = evaluate_run(tmp_path / "run0.parquet", tmp_path / "run0.maps.h5", 16, 0.3, manifest_path=tmp_path / "manifest.csv")
    values = {row["metric"]: row["value"] for row in rows}
    # the keys come from the file itself, not from its path
    assert {(r["scorer"], r["dataset"], r["category"], r["setting"], r["run"]) for r in rows} == {("winclip_x", "ds", "c", "k1", 2)}
    assert values["pixel_pro"] == pytest.approx(pixel_pro(maps.astype(np.float16).astype(np.float32), masks), abs=1e-9)
    assert {row["weights"] for row in rows} == {"random (fallback: test)"}
    assert all(set(row) == set(METRICS_COLUMNS) for row in rows)


def test_evaluate_run_without_maps_reports_image_metrics_only(tmp_path):
    scored_run(tmp_path, with_maps=False)
    rows = evaluate_run(tmp_path / "run0.parquet", tmp_path / "run0.maps.h5", 16, 0.3)
    assert {row["metric"] for row in rows} == {"image_auroc", "image_ap", "image_f1max"}


def test_evaluate_run_rejects_maps_of_another_size(tmp_path):
    scored_run(tmp_path)
    with pytest.raises(ValueError, match="map_size"):
        evaluate_run(tmp_path / "run0.parquet", tmp_path / "run0.maps.h5", 32, 0.3, manifest_path=tmp_path / "manifest.csv")


def test_a_score_file_without_its_keys_is_refused_with_the_fix(tmp_path):
    pd.DataFrame({"image_id": ["a"], "score": [0.5]}).to_parquet(tmp_path / "old.parquet")
    with pytest.raises(ValueError, match="old.parquet: no fsad keys.*rerun its score job"):
        evaluate_run(tmp_path / "old.parquet", None, 16, 0.3)


def test_metric_parts_combine_into_one_sorted_table(tmp_path):
    row = {"dataset": "ds", "category": "c", "setting": "k1", "scorer": "winclip", "metric": "image_auroc", "weights": "w"}
    write_metrics([{**row, "run": 1, "value": 0.5}], tmp_path / "p1.csv")
    write_metrics([{**row, "run": 0, "value": 0.75}], tmp_path / "p0.csv")
    combined = combine_metrics([tmp_path / "p1.csv", tmp_path / "p0.csv"], tmp_path / "metrics.csv")
    assert list(combined["run"]) == [0, 1]
    assert read_metrics(tmp_path / "metrics.csv").columns.tolist() == METRICS_COLUMNS
