"""Local GPUs: `snakemake --resources gpu=G` caps GPU jobs, claim_device gives each a distinct device.

Four toy GPU jobs on two fake GPUs (FSAD_FAKE_GPUS=2) record the device they were given and when they
held it. Snakemake itself assigns no device ids; the per-device locks of fsad.devices must.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from itertools import combinations
from pathlib import Path

import pytest

from .conftest import ROOT

pytestmark = pytest.mark.slow

JOB_SCRIPT = textwrap.dedent(
    """
    import json, os, sys, time
    from fsad.devices import claim_device

    with claim_device(poll_seconds=0.05) as device:
        start = time.time()
        visible = os.environ["CUDA_VISIBLE_DEVICES"]
        time.sleep(1.0)
        end = time.time()
    with open(sys.argv[1], "w") as out:
        json.dump({"device": device, "visible": visible, "start": start, "end": end}, out)
    """
)

SNAKEFILE = textwrap.dedent(
    """
    rule all:
        input: expand("held/{i}.json", i=range(4))

    rule gpu_job:
        output: "held/{i}.json"
        resources: gpu=1
        shell: "PYTHON hold_device.py {output}"
    """
)


def run_four_gpu_jobs(workdir: Path, gpu_resource: int) -> list[dict]:
    (workdir / "hold_device.py").write_text(JOB_SCRIPT)
    (workdir / "Snakefile").write_text(SNAKEFILE.replace("PYTHON", sys.executable))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "CUDA_VISIBLE"))}
    env.update(
        FSAD_FAKE_GPUS="2",
        FSAD_GPU_LOCK_DIR=str(workdir / "locks"),
        OMP_NUM_THREADS="1",
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])),
    )
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "--workflow-profile", "none", "--cores", "4", "--resources", f"gpu={gpu_resource}"],
        cwd=workdir, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return [json.loads((workdir / f"held/{i}.json").read_text()) for i in range(4)]


def overlapping(a: dict, b: dict) -> bool:
    return a["start"] < b["end"] and b["start"] < a["end"]


def most_at_once(held: list[dict]) -> int:
    """The largest number of jobs holding a device at the same moment (ends before starts at a tie)."""
    events = sorted([(h["start"], 1) for h in held] + [(h["end"], -1) for h in held])
    running = peak = 0
    for _, change in events:
        running += change
        peak = max(peak, running)
    return peak


@pytest.mark.parametrize("gpu_resource", [2, 4], ids=["gpu=2 (snakemake caps)", "gpu=4 (locks make the extra jobs wait)"])
def test_concurrent_gpu_jobs_hold_distinct_devices_at_most_two_at_once(tmp_path, gpu_resource):
    held = run_four_gpu_jobs(tmp_path, gpu_resource)
    assert {h["visible"] for h in held} <= {"0", "1"}
    assert all(h["device"] == "cpu" for h in held)  # fake GPUs compute on the CPU
    for a, b in combinations(held, 2):
        if overlapping(a, b):
            assert a["visible"] != b["visible"], f"two jobs held GPU {a['visible']} at once: {a} {b}"
    assert most_at_once(held) == 2, f"expected two devices in use at once at the peak: {held}"
