"""Runs through snakemake-executor-plugin-slurm on a real single-node SLURM cluster with fake GPUs.

The cluster (tests/workflow/slurm_cluster.py) is started once for this module and stopped, daemon by
daemon, even when a test fails. Jobs use profiles/slurm/profile.yaml with only what a cluster without
an accounting database needs changed (see ``cluster_profile``).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml

from .conftest import ROOT, TINY
from .metrics_checks import assert_metrics_cover_every_job
from .slurm_cluster import start_cluster, unavailable_reason

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
    """profiles/slurm as it is, except for what the test cluster lacks: an accounting DB (no account
    to validate, no sacct, so job status comes from squeue) and 40 s of patience before the first check."""
    profile = yaml.safe_load(PROFILE.read_text())
    profile["default-resources"].pop("slurm_account", None)
    profile.update({"slurm-status-command": "squeue", "slurm-init-seconds-before-status-checks": 1, "latency-wait": 5})
    directory = tmp_path / "profile"
    directory.mkdir()
    (directory / "profile.yaml").write_text(yaml.safe_dump(profile))
    return directory


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


def test_tiny_pipeline_runs_through_slurm_and_every_gpu_job_gets_a_gpu(slurm_cluster, cluster_profile, tmp_path):
    # One dataset keeps the number of SLURM job waves (about 10 s each) small; every rule still runs.
    overlay = tmp_path / "one_dataset.yaml"
    tiny = yaml.safe_load(TINY.read_text())
    overlay.write_text(yaml.safe_dump({"datasets": [d for d in tiny["datasets"] if d["name"] == "synthetic"]}))
    workdir = tmp_path / "run"
    workdir.mkdir()
    cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "--directory", str(workdir), "--profile", str(cluster_profile)]
    cmd += ["--configfile", str(TINY), str(overlay)]
    start = time.monotonic()
    proc = subprocess.run(cmd, env=job_env(), capture_output=True, text=True, timeout=600)
    elapsed = time.monotonic() - start
    assert proc.returncode == 0, f"{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}\n{slurm_cluster.logs()}"

    results = workdir / "results"
    assert_metrics_cover_every_job(results)
    assert (results / "tables/synthetic.md").stat().st_size > 0
    assert (results / "tables/summary.csv").stat().st_size > 0
    assert (results / "plots/roc_synthetic.png").stat().st_size > 0
    assert list(results.glob("scores/*/synthetic/*/*/run0.parquet"))
    for rule in GPU_RULES:
        logs = sorted((results / "logs" / rule).rglob("*.log"))
        assert logs, f"no {rule} job logs under {results / 'logs' / rule}"
        for log in logs:
            assert_slurm_gpu_allocation(log.read_text(), str(log.relative_to(results)))
    submitted = re.findall(r"Job \d+ has been submitted with SLURM jobid (\d+)", proc.stdout + proc.stderr)
    print(f"tiny pipeline through SLURM: {len(submitted)} SLURM jobs in {elapsed:.1f} s")
