"""Image- and pixel-level anomaly detection metrics.

Metric names (the ``metric`` column of ``metrics.csv``):

- ``image_auroc``, ``image_ap`` (scikit-learn ``average_precision_score``), ``image_f1max`` (max F1 over the PR curve);
- ``image_auroc:<sub_score>`` for each numeric sub-score column of a scores table;
- ``pixel_auroc`` over all pixels of all test images, ``pixel_pro``: area under the per-region-overlap curve up to
  a global FPR limit, divided by the limit (anomalib ``AUPRO`` / MVTec AD semantics).

Edge cases: a metric that needs both classes returns NaN and warns with :class:`OneClassWarning` when only one class
is present (a category whose test set holds no anomalies, or masks without a single defect pixel). NaN or infinite
scores are an error: they mean the scorer is broken, not that the metric is undefined.
"""

from __future__ import annotations

import logging
import warnings

import numpy as np
import pandas as pd
from scipy import ndimage
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score, roc_curve

log = logging.getLogger(__name__)

IMAGE_METRICS = ("image_auroc", "image_ap", "image_f1max")
PIXEL_METRICS = ("pixel_auroc", "pixel_pro")
SUB_SCORE_PREFIX = "image_auroc:"


class OneClassWarning(UserWarning):
    """Only one class is present, so a ranking metric is undefined and reported as NaN."""


def _both_classes(labels: np.ndarray, what: str) -> bool:
    present = np.unique(labels)
    if len(present) < 2:
        warnings.warn(f"{what}: only class {present.tolist()} present; metric is NaN", OneClassWarning, stacklevel=3)
        return False
    return True


def _finite(values: np.ndarray, what: str) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    if not np.isfinite(values).all():
        raise ValueError(f"{what}: {int((~np.isfinite(values)).sum())} NaN or infinite values; the scorer produced them, fix it and rerun")
    return values


def image_auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve of ``(N,)`` scores against ``(N,)`` 0/1 labels; NaN if one class."""
    scores = _finite(scores, "image scores")
    if not _both_classes(labels, "image AUROC"):
        return float("nan")
    return float(roc_auc_score(labels, scores))


def image_ap(scores: np.ndarray, labels: np.ndarray) -> float:
    """Average precision (step-wise area under the PR curve) of ``(N,)`` scores; NaN if one class."""
    scores = _finite(scores, "image scores")
    if not _both_classes(labels, "image AP"):
        return float("nan")
    return float(average_precision_score(labels, scores))


def f1_max(scores: np.ndarray, labels: np.ndarray) -> float:
    """Best F1 over every threshold of the precision-recall curve of ``(N,)`` scores; NaN if one class."""
    scores = _finite(scores, "image scores")
    if not _both_classes(labels, "image F1-max"):
        return float("nan")
    precision, recall, _ = precision_recall_curve(labels, scores)
    denominator = precision + recall
    f1 = np.divide(2 * precision * recall, denominator, out=np.zeros_like(denominator), where=denominator > 0)
    return float(f1.max())


def pixel_auroc(maps: np.ndarray, masks: np.ndarray) -> float:
    """ROC AUC over every pixel of ``(N, S, S)`` maps against ``(N, S, S)`` bool masks; NaN if one class."""
    maps = _finite(maps, "anomaly maps")
    masks = np.asarray(masks, dtype=bool)
    if not _both_classes(masks.ravel(), "pixel AUROC"):
        return float("nan")
    return float(roc_auc_score(masks.ravel(), maps.ravel()))


def label_regions(masks: np.ndarray, connectivity: int = 8) -> tuple[np.ndarray, int]:
    """Connected defect regions of ``(N, S, S)`` bool masks, numbered 1..n across the set (0 = defect-free).

    ``connectivity`` 8 (diagonal neighbours join a region, as OpenCV in anomalib and the MVTec AD evaluation
    script) or 4. Regions never cross image borders: the structuring element has no extent along N.
    """
    if connectivity not in (4, 8):
        raise ValueError(f"connectivity must be 4 or 8, got {connectivity}")
    structure = np.zeros((3, 3, 3), dtype=bool)
    structure[1] = ndimage.generate_binary_structure(2, 1 if connectivity == 4 else 2)
    regions, n_regions = ndimage.label(np.asarray(masks, dtype=bool), structure=structure)
    return regions, int(n_regions)


def pro_curve(
    maps: np.ndarray, masks: np.ndarray, num_thresholds: int | None = None, connectivity: int = 8
) -> tuple[np.ndarray, np.ndarray]:
    """Per-region-overlap curve: global FPR on defect-free pixels vs mean overlap over defect regions.

    At a threshold t, FPR = share of defect-free pixels with map >= t (over all images) and PRO = mean over the
    connected defect regions of the share of the region's pixels with map >= t.

    This is a weighted ROC curve: positives are defect pixels weighted 1 / (region size * number of regions), so
    the weighted TPR is exactly the mean region overlap; scikit-learn's ``roc_curve`` computes it in one sort.

    Args:
        maps: ``(N, S, S)`` anomaly maps, higher = more anomalous.
        masks: ``(N, S, S)`` bool ground truth with at least one defect and one defect-free pixel.
        num_thresholds: ``None`` uses every distinct map value as a threshold (exact, one sort); an int uses that
            many thresholds evenly spaced between the smallest and largest map value (no sort, coarser).
        connectivity: 8 or 4, see :func:`label_regions`.

    Returns:
        ``fpr`` and ``pro``, 1-D, non-decreasing, starting at 0 and ending at 1.
    """
    maps = _finite(maps, "anomaly maps").ravel()
    regions, n_regions = label_regions(masks, connectivity)
    regions = regions.ravel()
    region_sizes = np.bincount(regions)
    defect = regions > 0
    weights = np.where(defect, 1.0 / (region_sizes[regions] * max(n_regions, 1)), 1.0)
    if num_thresholds is None:
        fpr, pro, _ = roc_curve(defect, maps, sample_weight=weights)
        return fpr, np.minimum(pro, 1.0)
    if num_thresholds < 2:
        raise ValueError(f"num_thresholds must be at least 2, got {num_thresholds}")
    thresholds = np.linspace(maps.min(), maps.max(), num_thresholds)
    # Bin j holds the pixels whose highest reached threshold is j; counting bins >= j needs no sort.
    reached = np.searchsorted(thresholds, maps, side="right")
    false_positives = np.bincount(reached[~defect], minlength=num_thresholds + 1)
    overlaps = np.bincount(reached[defect], weights=weights[defect], minlength=num_thresholds + 1)
    fpr = np.cumsum(false_positives[:0:-1]) / max(int((~defect).sum()), 1)
    pro = np.cumsum(overlaps[:0:-1])
    return np.concatenate([[0.0], fpr]), np.minimum(np.concatenate([[0.0], pro]), 1.0)


def area_up_to(x: np.ndarray, y: np.ndarray, limit: float) -> float:
    """Trapezoid area under the non-decreasing curve ``(x, y)`` from 0 to ``limit``, ``y`` interpolated at the limit."""
    inside = int(np.searchsorted(x, limit, side="right"))
    xs, ys = x[:inside], y[:inside]
    if xs[-1] < limit and inside < len(x):
        step = (limit - x[inside - 1]) / (x[inside] - x[inside - 1])
        xs = np.append(xs, limit)
        ys = np.append(ys, y[inside - 1] + step * (y[inside] - y[inside - 1]))
    return float(np.trapezoid(ys, xs))


def pixel_pro(
    maps: np.ndarray,
    masks: np.ndarray,
    fpr_limit: float = 0.3,
    num_thresholds: int | None = None,
    connectivity: int = 8,
) -> float:
    """Area under the PRO curve (:func:`pro_curve`) for FPR in [0, fpr_limit], divided by ``fpr_limit`` (so in [0, 1]).

    NaN with :class:`OneClassWarning` when the masks hold no defect pixel or no defect-free pixel.
    """
    if not 0 < fpr_limit <= 1:
        raise ValueError(f"fpr_limit must lie in (0, 1], got {fpr_limit}")
    masks = np.asarray(masks, dtype=bool)
    if not _both_classes(masks.ravel(), "pixel PRO"):
        return float("nan")
    fpr, pro = pro_curve(maps, masks, num_thresholds, connectivity)
    return area_up_to(fpr, pro, fpr_limit) / fpr_limit


def sub_score_columns(scores: pd.DataFrame) -> list[str]:
    """Sub-score columns of a scores table: every numeric (non-boolean) column except ``label`` and ``score``."""
    return [
        name
        for name in scores.columns
        if name not in ("label", "score")
        and pd.api.types.is_numeric_dtype(scores[name])
        and not pd.api.types.is_bool_dtype(scores[name])
    ]


def evaluate_scores(
    scores: pd.DataFrame,
    maps: np.ndarray | None,
    masks: np.ndarray | None,
    fpr_limit: float = 0.3,
    num_thresholds: int | None = None,
) -> dict[str, float]:
    """All metrics of one scored test set.

    Args:
        scores: one row per test image with ``label`` (0/1) and ``score``, plus sub-score columns.
        maps: ``(N, S, S)`` anomaly maps in the row order of ``scores``, or ``None`` (no pixel metrics).
        masks: ``(N, S, S)`` bool masks in the same order, or ``None`` (no pixel metrics).
        fpr_limit: FPR integration limit of PRO.
        num_thresholds: ``None`` for exact PRO thresholds, else that many (see :func:`pro_curve`).

    Returns:
        ``{metric: value}`` with the image metrics, ``image_auroc:<sub_score>`` per sub-score and, when both
        maps and masks are given, the pixel metrics. Values in [0, 1] or NaN.
    """
    missing = {"label", "score"} - set(scores.columns)
    if missing:
        raise ValueError(f"scores table lacks column(s) {sorted(missing)}")
    labels = scores["label"].to_numpy().astype(int)
    image_scores = scores["score"].to_numpy()
    values = {
        "image_auroc": image_auroc(image_scores, labels),
        "image_ap": image_ap(image_scores, labels),
        "image_f1max": f1_max(image_scores, labels),
    }
    for name in sub_score_columns(scores):
        values[SUB_SCORE_PREFIX + name] = image_auroc(scores[name].to_numpy(), labels)
    if maps is not None and masks is not None:
        if maps.shape != masks.shape or maps.shape[0] != len(scores):
            raise ValueError(f"maps {maps.shape}, masks {masks.shape} and {len(scores)} scores do not match")
        values["pixel_auroc"] = pixel_auroc(maps, masks)
        values["pixel_pro"] = pixel_pro(maps, masks, fpr_limit, num_thresholds)
    return values
