"""The statistics tables of one dataset, from its score files (:mod:`fsad.evaluation.statistics` does the numbers).

- ``intervals``: per scorer and setting, image and pixel AUROC as mean ± std over runs beside its 95 % bootstrap
  interval, and the FPR at 95 % TPR (mean ± std over runs). A replicate of the dataset's value is, as the value
  itself, the mean over categories and then over runs, each (category, run) resampled on its own;
- ``paired``: per setting and pair of scorers, the difference of their image AUROC, its 95 % interval and the paired
  bootstrap p-value (the same resamples for both: :func:`fsad.evaluation.statistics.paired_p_value`);
- ``significance``: those p-values as a compact scorer x scorer matrix per setting;
- ``defect_types``: image AUROC of each category's normal test images against each defect type's, mean ± std over runs.

The resamples of (dataset, category, setting, run) come from ``derive_seed(seed, "bootstrap", dataset, category,
setting, run)``, so every scorer, every rerun and every table sees the same ones.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from fsad.data.images import load_masks
from fsad.evaluation.collect import read_maps
from fsad.evaluation.statistics import RankedPoints, fpr_at_tpr, paired_p_value, percentile_interval, stratified_resamples
from fsad.evaluation.tables import MISSING, TableFiles, format_cell, format_pair
from fsad.score_files import read_score_keys
from fsad.seeding import derive_seed

TABLES = ("intervals", "paired", "significance", "defect_types")
SIGNIFICANCE_LEVEL = 0.05


@dataclass
class StatisticsOptions:
    """The config's ``evaluation.statistics`` (``config/schema.yaml``): which tables and columns, and the bootstrap."""

    confidence_intervals: bool
    fpr_at_95_tpr: bool
    paired_tests: bool
    per_defect_type: bool
    n_bootstrap: int
    level: float = 0.95

    def tables(self) -> list[str]:
        """The tables these options write, in :data:`TABLES` order."""
        wanted = {
            "intervals": self.confidence_intervals or self.fpr_at_95_tpr,
            "paired": self.paired_tests,
            "significance": self.paired_tests,
            "defect_types": self.per_defect_type,
        }
        return [name for name in TABLES if wanted[name]]


@dataclass
class ScoredRun:
    """One score file's numbers: keys, point estimates and bootstrap replicates (``(B,)``, NaN without pixels)."""

    scorer: str
    category: str
    setting: str
    run: int
    image_auroc: float
    pixel_auroc: float
    fpr95: float
    image_replicates: np.ndarray
    pixel_replicates: np.ndarray
    defect_aurocs: dict[str, float]


def _pixel_points(maps: np.ndarray, masks: np.ndarray) -> RankedPoints:
    n, side, _ = maps.shape
    image = np.repeat(np.arange(n), side * side)
    return RankedPoints.of(maps.reshape(-1), masks.reshape(-1), image)


def _defect_aurocs(frame: pd.DataFrame) -> dict[str, float]:
    """Image AUROC of the normal images against each defect type's anomalous images."""
    normal = frame[frame["label"] == 0]
    out = {}
    for defect_type, anomalous in frame[frame["label"] == 1].groupby("defect_type"):
        pair = pd.concat([normal, anomalous])
        out[str(defect_type)] = RankedPoints.of(pair["score"].to_numpy(), pair["label"].to_numpy()).auroc(np.ones(len(pair)))
    return out


def score_run(scores_path: str | Path, manifest: pd.DataFrame, seed: int, options: StatisticsOptions) -> ScoredRun:
    """The statistics of one score file (maps beside it, ``.maps.h5``); ``manifest`` indexed by ``image_id``."""
    scores_path = Path(scores_path)
    keys = read_score_keys(scores_path)
    frame = pd.read_parquet(scores_path)
    labels = frame["label"].to_numpy().astype(int)
    rng = np.random.default_rng(derive_seed(seed, "bootstrap", keys["dataset"], keys["category"], keys["setting"], keys["run"]))
    counts = stratified_resamples(labels, options.n_bootstrap, rng)
    images = RankedPoints.of(frame["score"].to_numpy(), labels)
    maps_path = scores_path.with_suffix(".maps.h5")
    maps = read_maps(maps_path, list(frame["image_id"]), _map_side(maps_path)) if maps_path.exists() else None
    masks = None if maps is None else load_masks(manifest.loc[frame["image_id"], "mask_path"].tolist(), labels.tolist(), maps.shape[1])
    pixels = None if masks is None or not masks.any() else _pixel_points(maps, masks)
    nan_replicates = np.full(options.n_bootstrap, np.nan)
    return ScoredRun(
        scorer=keys["scorer"],
        category=keys["category"],
        setting=keys["setting"],
        run=int(keys["run"]),
        image_auroc=images.auroc(np.ones(len(labels))),
        pixel_auroc=float("nan") if pixels is None else pixels.auroc(np.ones(len(labels))),
        fpr95=fpr_at_tpr(frame["score"].to_numpy(), labels, 0.95),
        image_replicates=images.replicates(counts) if options.confidence_intervals or options.paired_tests else nan_replicates,
        pixel_replicates=pixels.replicates(counts) if pixels is not None and options.confidence_intervals else nan_replicates,
        defect_aurocs=_defect_aurocs(frame) if options.per_defect_type else {},
    )


def _map_side(maps_path: Path) -> int:
    import h5py

    with h5py.File(maps_path, "r") as h5:
        return int(h5["maps"].shape[1]) if "maps" in h5 else 0


def _dataset_value(runs: list[ScoredRun], field: str) -> np.ndarray:
    """Mean over categories, then over runs, of ``field`` (a scalar or a ``(B,)`` replicate array) of ``runs``."""
    by_run: dict[int, list] = {}
    for scored in runs:
        by_run.setdefault(scored.run, []).append(getattr(scored, field))
    return np.mean([np.mean(values, axis=0) for values in by_run.values()], axis=0)


def _per_run_means(runs: list[ScoredRun], field: str) -> tuple[float, float]:
    """Mean ± std (ddof 0; NaN std with one run) over runs of the category mean of ``field``."""
    by_run: dict[int, list[float]] = {}
    for scored in runs:
        by_run.setdefault(scored.run, []).append(getattr(scored, field))
    means = np.array([np.mean(values) for values in by_run.values()])
    return float(means.mean()), float(means.std()) if len(means) > 1 else float("nan")


def _groups(runs: list[ScoredRun]) -> dict[tuple[str, str], list[ScoredRun]]:
    groups: dict[tuple[str, str], list[ScoredRun]] = {}
    for scored in runs:
        groups.setdefault((scored.scorer, scored.setting), []).append(scored)
    return dict(sorted(groups.items()))


def _pct(value: float) -> float:
    return value * 100


def intervals_table(runs: list[ScoredRun], options: StatisticsOptions) -> pd.DataFrame:
    """Rows ``(scorer, setting)``; columns I-AUROC, its CI, P-AUROC, its CI, FPR@95TPR (percent), as switched on."""
    rows = []
    for (scorer, setting), group in _groups(runs).items():
        row = {"scorer": scorer, "setting": setting}
        if options.confidence_intervals:
            for label, field in (("I-AUROC", "image"), ("P-AUROC", "pixel")):
                mean, std = _per_run_means(group, f"{field}_auroc")
                interval = percentile_interval(_dataset_value(group, f"{field}_replicates"), options.level)
                row[label] = format_cell(_pct(mean), _pct(std))
                row[f"{label} {options.level:.0%} CI"] = format_pair([_pct(v) for v in interval])
        if options.fpr_at_95_tpr:
            mean, std = _per_run_means(group, "fpr95")
            row["FPR@95TPR"] = format_cell(_pct(mean), _pct(std))
        rows.append(row)
    return pd.DataFrame(rows).set_index(["scorer", "setting"])


def paired_rows(runs: list[ScoredRun], options: StatisticsOptions) -> pd.DataFrame:
    """Per setting and pair of scorers on the same (category, run)s: ``setting, scorer_a, scorer_b, difference, low,
    high, p_value`` (image AUROC of a minus b, in [0, 1])."""
    groups = _groups(runs)
    rows = []
    for (a, setting_a), (b, setting_b) in itertools.combinations(groups, 2):
        if setting_a != setting_b:
            continue
        first, second = groups[(a, setting_a)], groups[(b, setting_b)]
        if sorted((r.category, r.run) for r in first) != sorted((r.category, r.run) for r in second):
            continue
        differences = _dataset_value(first, "image_replicates") - _dataset_value(second, "image_replicates")
        low, high = percentile_interval(differences, options.level)
        point = _dataset_value(first, "image_auroc") - _dataset_value(second, "image_auroc")
        rows.append({"setting": setting_a, "scorer_a": a, "scorer_b": b, "difference": float(point), "low": low, "high": high, "p_value": paired_p_value(differences)})
    return pd.DataFrame(rows, columns=["setting", "scorer_a", "scorer_b", "difference", "low", "high", "p_value"])


def paired_table(pairs: pd.DataFrame, level: float) -> pd.DataFrame:
    """Text cells of :func:`paired_rows`: the difference (percent points), its interval and the p-value."""
    if pairs.empty:
        return pd.DataFrame({"note": ["no two scorers share a setting and its (category, run)s"]})
    table = pd.DataFrame(
        {
            "ΔI-AUROC": [format_cell(_pct(d)) for d in pairs["difference"]],
            f"{level:.0%} CI": [format_pair([_pct(lo), _pct(hi)]) for lo, hi in zip(pairs["low"], pairs["high"])],
            "p": [_p_text(p) for p in pairs["p_value"]],
        },
        index=pd.MultiIndex.from_frame(pairs[["setting", "scorer_a", "scorer_b"]]),
    )
    return table


def _p_text(p: float) -> str:
    return MISSING if np.isnan(p) else f"{p:.3f}" + ("*" if p < SIGNIFICANCE_LEVEL else "")


def significance_table(pairs: pd.DataFrame) -> pd.DataFrame:
    """Rows ``(setting, scorer)``, one column per scorer: the pair's p-value (``*`` below 0.05), ``–`` on the diagonal."""
    if pairs.empty:
        return pd.DataFrame({"note": ["no two scorers share a setting and its (category, run)s"]})
    cells: dict[tuple[str, str], dict[str, str]] = {}
    scorers = sorted({*pairs["scorer_a"], *pairs["scorer_b"]})
    for row in pairs.itertuples():
        cells.setdefault((row.setting, row.scorer_a), {})[row.scorer_b] = _p_text(row.p_value)
        cells.setdefault((row.setting, row.scorer_b), {})[row.scorer_a] = _p_text(row.p_value)
    table = pd.DataFrame.from_dict(cells, orient="index").reindex(columns=scorers).fillna(MISSING)
    table.index = pd.MultiIndex.from_tuples(table.index, names=["setting", "scorer"])
    return table.sort_index()


def defect_type_table(runs: list[ScoredRun]) -> pd.DataFrame:
    """Rows ``(category, defect type)``, columns ``(scorer, setting)``: image AUROC (%), mean ± std over runs."""
    cells: dict[tuple[str, str], dict[tuple[str, str], str]] = {}
    for (scorer, setting), group in _groups(runs).items():
        per_type: dict[tuple[str, str], dict[int, float]] = {}
        for scored in group:
            for defect_type, value in scored.defect_aurocs.items():
                per_type.setdefault((scored.category, defect_type), {})[scored.run] = value
        for key, by_run in per_type.items():
            values = np.array(list(by_run.values()))
            cells.setdefault(key, {})[(scorer, setting)] = format_cell(_pct(values.mean()), _pct(values.std()) if len(values) > 1 else np.nan)
    table = pd.DataFrame.from_dict(cells, orient="index").sort_index().fillna(MISSING)
    table.index = pd.MultiIndex.from_tuples(table.index, names=["category", "defect type"])
    table.columns = pd.MultiIndex.from_tuples(table.columns)
    return table.reindex(columns=sorted(table.columns))


def write_statistics_tables(
    score_files: list[str | Path], manifest_path: str | Path, seed: int, options: StatisticsOptions, files: dict[str, TableFiles], dataset: str
) -> list[Path]:
    """Compute the statistics of ``dataset``'s score files and write each table of ``options.tables()`` to ``files[name]``."""
    from fsad.data.manifest import read_manifest
    from fsad.evaluation.tables import write_table
    from fsad.provenance import environment_line

    if not score_files:
        raise ValueError(f"statistics of {dataset}: no score files given")
    manifest = read_manifest(manifest_path).set_index("image_id")
    runs = [score_run(path, manifest, seed, options) for path in score_files]
    keys = [read_score_keys(path) for path in score_files]
    rows = pd.DataFrame({"weights": [k["weights"] for k in keys], "environment": [environment_line(k["environment"]) for k in keys]})
    where = f"{options.n_bootstrap} stratified bootstrap resamples of each (category, run)'s test images, seeded"
    written: list[Path] = []
    wanted = options.tables()
    pairs = paired_rows(runs, options) if options.paired_tests else None
    if "intervals" in wanted:
        notes = [f"Intervals: percentile, {where}; a replicate is the mean over categories and runs, like the value."]
        written += write_table(intervals_table(runs, options), files["intervals"], f"{dataset}: AUROC with {options.level:.0%} intervals (%)", rows, notes)
    if "paired" in wanted:
        notes = [f"Paired bootstrap on the same resamples ({where}); p two-sided, * below {SIGNIFICANCE_LEVEL}."]
        written += write_table(paired_table(pairs, options.level), files["paired"], f"{dataset}: paired image-AUROC differences (a − b, points)", rows, notes)
    if "significance" in wanted:
        notes = [f"Paired bootstrap p-values of image AUROC ({where}); * below {SIGNIFICANCE_LEVEL}."]
        written += write_table(significance_table(pairs), files["significance"], f"{dataset}: significance of image-AUROC differences", rows, notes)
    if "defect_types" in wanted:
        notes = ["Each cell: the category's normal test images against that defect type's anomalous ones."]
        written += write_table(defect_type_table(runs), files["defect_types"], f"{dataset}: image AUROC per defect type (%)", rows, notes)
    return written
