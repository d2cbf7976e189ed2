"""Helpers for workflow tests: run the real Snakefile in a temporary working directory."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import copy

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "tests" / "workflow" / "configs" / "tiny.yaml"
DEFAULT_CONFIG = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())


def merged(base: dict, *overlays: dict) -> dict:
    """``overlays`` merged into ``base`` as config files merge (mappings key by key, anything else replaces), except
    that ``None`` deletes a key: ``{"scorers": {"winclip": None}}`` is the config without that instance."""
    out = copy.deepcopy(base)
    for overlay in overlays:
        for key, value in overlay.items():
            if value is None:
                out.pop(key, None)
            elif isinstance(value, dict) and isinstance(out.get(key), dict):
                out[key] = merged(out[key], value)
            else:
                out[key] = copy.deepcopy(value)
    return out


def write_config(path: Path, *overlays: dict, base: Path = TINY) -> Path:
    """A complete config file: ``base`` with ``overlays`` merged (:func:`merged`), for ``configfiles=(path,)``."""
    path.write_text(yaml.safe_dump(merged(yaml.safe_load(base.read_text()), *overlays), sort_keys=False))
    return path


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
