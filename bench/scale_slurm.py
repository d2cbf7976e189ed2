"""A many-category benchmark through a real (single-node, throw-away) SLURM cluster: submissions, wall time, time per rule.

Starts the test suite's cluster (tests/workflow/slurm_cluster.py: slurmctld, slurmd and munged as child processes,
two fake GPUs; needs root and Debian's slurm-wlm and munge, see .ci/slurm-setup.sh), runs the tiny configuration on a
synthetic dataset of ``--categories`` categories (copies of the textile defects) through ``profiles/slurm`` (only the
account dropped and ``squeue`` for job status, as in the tests), counts the batch jobs slurmctld accepted and reports
the time per rule from the run's benchmark files and job logs (bench/job_times.py).

    python bench/scale_slurm.py --categories 20 --workdir /tmp/scale --out bench/results_scale_cpu.md
    python bench/scale_slurm.py --categories 20 --ungrouped --workdir /tmp/scale-ungrouped   # one submission per job
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(Path(__file__).resolve().parent)]
from job_times import print_report, rule_times  # noqa: E402

from tests.workflow.slurm_cluster import start_cluster, unavailable_reason, write_cluster_profile  # noqa: E402

TINY = ROOT / "tests/workflow/configs/tiny.yaml"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--categories", type=int, default=20)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--ungrouped", action="store_true", help="submit every job on its own (the profile without groups)")
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--out", type=Path, help="write the Markdown report here too")
    args = parser.parse_args()
    if reason := unavailable_reason():
        raise SystemExit(reason)

    args.workdir.mkdir(parents=True, exist_ok=True)
    profile = write_cluster_profile(args.workdir / "profile", ROOT / "profiles/slurm/profile.yaml", grouped=not args.ungrouped)
    tiny = yaml.safe_load(TINY.read_text())
    synthetic = next(d for d in tiny["datasets"] if d["name"] == "synthetic")
    overlay = args.workdir / "scale.yaml"
    overlay.write_text(yaml.safe_dump({"runs": args.runs, "datasets": [synthetic | {"copies": args.categories}]}))
    run_dir = args.workdir / "run"
    cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "--directory", str(run_dir)]
    cmd += ["--profile", str(args.workdir / "profile"), "--configfile", str(TINY), str(overlay)]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "FSAD_", "CUDA_VISIBLE"))}
    env |= {"OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))}

    cluster = start_cluster(("cpu", "gpu"), gpus=2)
    try:
        started = time.perf_counter()
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - started
        submissions = len(cluster.submitted_job_ids())
    finally:
        cluster.stop()
    if proc.returncode != 0:
        raise SystemExit(f"snakemake failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")

    times = rule_times(run_dir / "results")
    mode = "grouped (" + ", ".join(profile["group-components"]) + ")" if not args.ungrouped else "ungrouped"
    text = (
        f"{args.categories} synthetic categories (tiny config, fsad-tiny backbone, {args.runs} run(s)) through the single-node "
        f"test SLURM cluster (2 CPU cores, 2 fake GPUs), profiles/slurm {mode}: **{submissions} submissions, "
        f"{wall / 60:.1f} min wall**.\n\nTime per rule (benchmark files and job logs):\n\n{times.to_markdown(index=False)}\n"
    )
    print_report(text, args.out)


if __name__ == "__main__":
    main()
