"""Helpers for workflow tests: run the real Snakefile in a temporary working directory."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "tests" / "workflow" / "configs" / "tiny.yaml"


def snakemake(workdir: Path, *args: str, configfiles: tuple[Path, ...] = (TINY,), check: bool = True, env: dict | None = None):
    """Run ``python -m snakemake`` on the repository's Snakefile with ``workdir`` as working directory."""
    cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "--directory", str(workdir), "--workflow-profile", "none"]
    if configfiles:  # one flag, several files: repeated --configfile flags keep only the last
        cmd += ["--configfile", *map(str, configfiles)]
    cmd += list(args)
    proc = subprocess.run(
        cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}, timeout=1200
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}")
    return proc


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every workflow test starts Snakemake (or a SLURM cluster): it must carry ``slow`` (module-level ``pytestmark``),
    so that ``-m "not slow"`` stays the fast loop."""
    here = Path(__file__).parent
    unmarked = [item.nodeid for item in items if here in item.path.parents and item.get_closest_marker("slow") is None]
    if unmarked:
        raise pytest.UsageError(f"workflow tests without pytest.mark.slow (add pytestmark = pytest.mark.slow): {unmarked}")


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """One full run of the tiny configuration, shared by the tests that inspect its outputs."""
    workdir = tmp_path_factory.mktemp("tiny")
    proc = snakemake(workdir, "--cores", "2")
    return workdir, proc
