"""Runs through snakemake-executor-plugin-slurm on a real single-node SLURM cluster with fake GPUs.

The cluster (tests/workflow/slurm_cluster.py) is started once for this module and stopped, daemon by
daemon, even when a test fails. Jobs use profiles/slurm/profile.yaml with only what a cluster without
an accounting database needs changed (see ``cluster_profile``).
"""

from __future__ import annotations

import math
import os
import re
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from .conftest import ROOT, TINY
from .metrics_checks import assert_metrics_cover_every_job
from .slurm_cluster import start_cluster, unavailable_reason, write_cluster_profile

PROFILE = ROOT / "profiles" / "slurm" / "profile.yaml"
GPU_RULES = ("extract_features", "score")

UNAVAILABLE = unavailable_reason()
pytestmark = [pytest.mark.slow, pytest.mark.slurm, pytest.mark.requires(UNAVAILABLE, "FSAD_REQUIRE_SLURM")]


def profile_partitions(profile: dict) -> tuple[str, ...]:
    """Every partition the profile names, the default first."""
    names = [profile["default-resources"]["slurm_partition"]]
    names += [r["slurm_partition"] for r in profile["set-resources"].values() if "slurm_partition" in r]
    return tuple(dict.fromkeys(names))


@pytest.fixture(scope="module")
def slurm_cluster():
    cluster = start_cluster(profile_partitions(yaml.safe_load(PROFILE.read_text())), gpus=2)
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def cluster_profile(tmp_path) -> Path:
    """profiles/slurm as the test cluster can run it (:func:`write_cluster_profile`)."""
    write_cluster_profile(tmp_path / "profile", PROFILE)
    return tmp_path / "profile"


def job_env() -> dict[str, str]:
    """The test's environment for snakemake and its jobs (sbatch --export=ALL passes it on)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "FSAD_", "CUDA_VISIBLE"))}
    return {**env, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))}


def assert_slurm_gpu_allocation(log_text: str, where: str) -> None:
    """claim_device logged a SLURM job with a GPU: its job id and the CUDA_VISIBLE_DEVICES SLURM set."""
    assert re.search(r"SLURM_JOB_ID=\d+", log_text), f"{where}: not run as a SLURM job:\n{log_text}"
    assert re.search(r"CUDA_VISIBLE_DEVICES=\d", log_text), f"{where}: no GPU allocated:\n{log_text}"
    assert re.search(r"SLURM_GPUS_ON_NODE=1\b", log_text), f"{where}: not exactly one GPU:\n{log_text}"


TOY_SNAKEFILE = textwrap.dedent(
    """
    rule all:
        input: "tables.txt"

    rule extract_features:
        output: "features.txt"
        log: "logs/extract_features.log"
        resources: gpu=1
        shell:
            "python -c 'from fsad.devices import claim_device; from fsad.logs import job_logging\\n"
            "with job_logging(\\"{log}\\"), claim_device() as device: open(\\"{output}\\", \\"w\\").write(device)'"

    rule tables:
        input: "features.txt"
        output: "tables.txt"
        log: "logs/tables.log"
        shell: "env > {log}; cat {input} > {output}"
    """
)


def test_toy_workflow_gpu_rule_gets_a_slurm_gpu_and_cpu_rule_none(slurm_cluster, cluster_profile, tmp_path):
    (tmp_path / "Snakefile").write_text(TOY_SNAKEFILE)
    # As from the repository root: the auto-applied default profile on top of the SLURM one.
    shutil.copytree(ROOT / "profiles" / "default", tmp_path / "profiles" / "default")
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "--profile", str(cluster_profile)],
        cwd=tmp_path, env=job_env(), capture_output=True, text=True, timeout=300,
    )
    elapsed = time.monotonic() - start
    assert proc.returncode == 0, f"{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}\n{slurm_cluster.logs()}"
    assert "workflow specific profile profiles/default" in proc.stdout + proc.stderr
    assert (tmp_path / "features.txt").read_text() == "cpu"  # fake GPUs: torch sees none
    assert_slurm_gpu_allocation((tmp_path / "logs/extract_features.log").read_text(), "extract_features")
    tables_env = (tmp_path / "logs/tables.log").read_text()
    assert re.search(r"^SLURM_JOB_ID=\d+", tables_env, re.M)
    assert "CUDA_VISIBLE_DEVICES" not in tables_env
    print(f"toy workflow through SLURM: {elapsed:.1f} s")


def test_tiny_pipeline_on_many_categories_runs_as_few_grouped_submissions_each_gpu_job_with_a_gpu(slurm_cluster, cluster_profile, tmp_path):
    """The tiny pipeline on five synthetic categories: 15 score and 15 evaluate jobs, 5 feature extractions and a
    download would be 36 submissions of one job each; the profile's groups make them five, with every output as
    without grouping, and every GPU job inside a group job still runs on a SLURM-allocated GPU."""
    categories, runs = 5, 1
    profile = yaml.safe_load(PROFILE.read_text())
    components = {name: int(n) for name, n in (entry.split("=") for entry in profile["group-components"])}
    tiny = yaml.safe_load(TINY.read_text())
    synthetic = next(d for d in tiny["datasets"] if d["name"] == "synthetic")
    overlay = tmp_path / "many_categories.yaml"
    overlay.write_text(yaml.safe_dump({"runs": runs, "datasets": [synthetic | {"copies": categories}]}))
    workdir = tmp_path / "run"
    workdir.mkdir()
    before = len(slurm_cluster.submitted_job_ids())
    cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "--directory", str(workdir), "--profile", str(cluster_profile)]
    cmd += ["--configfile", str(TINY), str(overlay)]
    start = time.monotonic()
    proc = subprocess.run(cmd, env=job_env(), capture_output=True, text=True, timeout=900)
    elapsed = time.monotonic() - start
    assert proc.returncode == 0, f"{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}\n{slurm_cluster.logs()}"

    # The default config's settings: winclip in zs (one run) and k1, the anomalous memory in a1, on every category.
    score_jobs = categories * ((1 + runs) + runs)
    results = workdir / "results"
    names = [f"textile{i}" for i in range(1, categories + 1)]
    assert len(list(results.glob("scores/*/synthetic/textile*/*/run*.parquet"))) == score_jobs
    assert sorted({p.parent.parent.name for p in results.glob("scores/*/synthetic/*/*/run*.parquet")}) == names
    assert_metrics_cover_every_job(results)
    summary = pd.read_csv(results / "tables/summary.csv", dtype=str, keep_default_na=False).query("dataset == 'synthetic'")
    assert sorted(zip(summary["scorer"], summary["setting"])) == [("anomalous_memory", "a1"), ("winclip", "k1"), ("winclip", "zs")]
    metrics = pd.read_csv(results / "metrics/metrics.csv").query("scorer == 'winclip' and setting == 'zs' and metric == 'image_auroc'")
    assert sorted(metrics["category"]) == names
    assert summary.set_index("setting").at["zs", "I-AUROC"] == f"{100 * metrics['value'].mean():.1f}"  # the mean over all categories
    assert (results / "plots/roc_synthetic.png").stat().st_size > 0
    for rule in GPU_RULES:
        logs = sorted((results / "logs" / rule).rglob("*.log"))
        assert len(logs) == {"extract_features": categories, "score": score_jobs}[rule], f"{rule} job logs: {logs}"
        for log in logs:
            assert_slurm_gpu_allocation(log.read_text(), str(log.relative_to(results)))

    expected = 1 + math.ceil(categories / components["features"]) + math.ceil(score_jobs / components["scores"])  # download + groups
    submitted = slurm_cluster.submitted_job_ids()[before:]
    assert len(submitted) == expected, f"{len(submitted)} SLURM submissions, expected {expected}:\n{proc.stderr[-6000:]}"
    print(f"{categories} categories through SLURM: {len(submitted)} submissions (ungrouped: {1 + categories + 2 * score_jobs}) in {elapsed:.1f} s")
