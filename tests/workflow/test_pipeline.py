"""The whole pipeline on the tiny configuration: outputs, contents, and an immediate rerun doing nothing."""

from __future__ import annotations

import h5py
import pandas as pd
import pytest
import yaml

from .conftest import TINY, snakemake, write_config
from .metrics_checks import PIXEL_METRICS, assert_metrics_cover_every_job

# The tiny run is a session fixture: under pytest-xdist (--dist loadgroup) its readers share one worker.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("tiny_run")]


def test_default_config_dry_runs(tmp_path):
    proc = snakemake(tmp_path, "-n", "--cores", "2", configfiles=())
    assert "extract_features" in proc.stdout and "score" in proc.stdout


def test_a_bad_config_key_stops_before_any_job(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"scorers": {"winclip": {"prompt_presett": "paper"}}}))
    proc = snakemake(tmp_path, "-n", "--cores", "1", configfiles=(TINY, bad), check=False)
    assert proc.returncode != 0
    assert "prompt_presett" in proc.stdout + proc.stderr


def test_a_partial_config_file_alone_says_that_a_config_file_is_the_whole_config(tmp_path):
    """An overlay written for the demo (the old behaviour merged it onto config/config.yaml) names the fix."""
    partial = tmp_path / "partial.yaml"
    partial.write_text(yaml.safe_dump({"runs": 2}))
    proc = snakemake(tmp_path, "-n", "--cores", "1", configfiles=(partial,), check=False)
    assert proc.returncode != 0
    assert "is the whole config, not an overlay on config/config.yaml" in proc.stdout + proc.stderr
    disabled = write_config(tmp_path / "disabled.yaml", {"scorers": {"anomalous_memory": {"enabled": False}}})
    proc = snakemake(tmp_path, "-n", "--cores", "1", configfiles=(disabled,), check=False)
    assert proc.returncode != 0 and "scorers.anomalous_memory.enabled" in proc.stdout + proc.stderr


def test_tiny_run_writes_scores_metrics_and_tables(tiny_run):
    workdir, _ = tiny_run
    results = workdir / "results"
    scores = pd.read_parquet(results / "scores/winclip/synthetic/textile/k1/run0.parquet")
    assert {"image_id", "image_path", "label", "defect_type", "score", "zero_shot", "weights"} <= set(scores.columns)
    assert scores["label"].nunique() == 2
    with h5py.File(results / "scores/winclip/synthetic/textile/k1/run0.maps.h5") as h5:
        assert h5["maps"].shape == (len(scores), 64, 64)
    metrics = assert_metrics_cover_every_job(results)
    assert {"dataset", "category", "setting", "run", "scorer", "metric", "value", "weights"} <= set(metrics.columns)
    # synthetic defects come with exact masks, textile images with image labels only
    pixel_rows = metrics[metrics["metric"].isin(PIXEL_METRICS)]
    assert set(pixel_rows["dataset"]) == {"synthetic"}
    synthetic_jobs = metrics[metrics["dataset"] == "synthetic"].groupby(["scorer", "category", "setting", "run"])["metric"].agg(set)
    assert all(PIXEL_METRICS <= job for job in synthetic_jobs)
    assert (metrics["weights"] == "random").all()
    for ext in ("md", "csv", "tex"):
        assert (results / f"tables/synthetic.{ext}").stat().st_size > 0
    assert "random" in (results / "tables/synthetic.md").read_text().lower()
    assert (results / "plots/roc_synthetic.png").stat().st_size > 0


def test_an_immediate_rerun_has_nothing_to_do(tiny_run):
    workdir, _ = tiny_run
    proc = snakemake(workdir, "-n", "--cores", "2")
    assert "Nothing to be done" in proc.stdout + proc.stderr
