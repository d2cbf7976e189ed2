"""The read audit of workflow jobs (tests/tools/read_audit/sitecustomize.py) on one short run of the tiny config:
every job's process reports what it read, the features job of a category read exactly its pool's images, and a
score job's store reads are its split's test images and references."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest

from ..unit.read_audit import is_read_mode
from .conftest import ROOT, snakemake

pytestmark = pytest.mark.slow
TARGET = "results/scores/winclip/synthetic/textile/k1/run0.parquet"
JOBS = ("prepare_dataset", "draw_pool", "draw_split", "extract_features", "score")


@pytest.fixture(scope="module")
def audited_run(tmp_path_factory):
    """One score job of the tiny config and the jobs it needs, each process writing its read audit."""
    workdir = tmp_path_factory.mktemp("read_audit")
    audit_dir = workdir / "audit"
    path = os.pathsep.join(filter(None, [str(ROOT / "tests" / "tools" / "read_audit"), str(ROOT), os.environ.get("PYTHONPATH")]))
    snakemake(workdir, "--cores", "2", TARGET, env={"FSAD_READ_AUDIT": str(audit_dir), "PYTHONPATH": path})
    reports = [json.loads(p.read_text()) for p in sorted(audit_dir.glob("*.json"))]
    by_job = {}
    for report in reports:
        script = Path(report["argv"][0]).name if report["argv"] else ""
        for job in JOBS:
            if script.endswith(f".{job}.py"):
                assert job not in by_job, f"two processes of job {job}"
                by_job[job] = report
    return workdir / "results", by_job


def files_read(report: dict) -> set[Path]:
    return {Path(o["path"]).resolve() for o in report["opened"] if is_read_mode(o["mode"])}


def dataset_files(results: Path) -> tuple[pd.DataFrame, set[Path], set[Path]]:
    manifest = pd.read_csv(results / "data/synthetic/manifest.csv", keep_default_na=False).set_index("image_id")
    images = {Path(p).resolve() for p in manifest["image_path"]}
    masks = {Path(p).resolve() for p in manifest["mask_path"] if p}
    return manifest, images, masks


def test_every_job_process_writes_its_read_audit(audited_run):
    _, by_job = audited_run
    assert set(by_job) == set(JOBS)
    for report in by_job.values():
        assert report["pid"] > 0 and report["opened"]


def test_the_features_job_reads_exactly_its_pools_images(audited_run):
    results, by_job = audited_run
    manifest, images, masks = dataset_files(results)
    pool = json.loads((results / "splits/synthetic/textile/pool.json").read_text())
    in_pool = {*pool["test"], *pool["normal_pool"], *pool["anomalous_pool"]}
    assert len(in_pool) < len(manifest)  # some images stay out of the pool, so "every image" would fail
    read = files_read(by_job["extract_features"])
    assert read & images == {Path(manifest.at[i, "image_path"]).resolve() for i in in_pool}
    assert not read & masks


def test_the_score_jobs_store_reads_are_its_splits_test_images_and_references(audited_run):
    results, by_job = audited_run
    split = json.loads((results / "splits/synthetic/textile/k1/run0.json").read_text())
    report = by_job["score"]
    ((store, ids),) = report["loads"].items()
    assert Path(store).parent.name == "synthetic" and Path(store).name == "textile.h5"
    assert set(ids) == {*split["test"], *split["normal_refs"]} and len(split["normal_refs"]) == 1
    _, images, masks = dataset_files(results)
    assert not files_read(report) & (images | masks)  # the features come from the store, never from the images
