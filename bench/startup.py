"""Start-up of score and evaluate jobs with warm caches, from the benchmark files and job logs of a real run.

Runs a config once to fill every cache (features, prompt embeddings, fits), then reruns only the score and
evaluate jobs (``--forcerun score evaluate``) one at a time (``--cores 1``, so jobs do not slow each other) and
reports their wall time and start-up per rule (bench/job_times.py). ``--source`` runs another checkout of the
project (its Snakefile and its ``fsad`` package), e.g. an older commit for a before/after comparison.

    python bench/startup.py --workdir /tmp/startup --out bench/results_startup.md
    git worktree add /tmp/before <commit>
    python bench/startup.py --source /tmp/before --workdir /tmp/startup-before --out /tmp/before.md
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from job_times import print_report, rule_times  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def snakemake(source: Path, workdir: Path, configfiles: list[Path], *args: str) -> float:
    """Run the workflow of ``source`` in ``workdir``; its jobs import ``fsad`` from ``source``. Returns wall seconds."""
    cmd = [sys.executable, "-m", "snakemake", "-s", str(source / "Snakefile"), "--directory", str(workdir), "--workflow-profile", "none"]
    cmd += ["--configfile", *map(str, configfiles), *args]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(source), os.environ.get("PYTHONPATH")])), "OMP_NUM_THREADS": "1"}
    started = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"snakemake failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=ROOT, help="the checkout to run (default: this one)")
    parser.add_argument("--configfile", type=Path, nargs="+", default=[ROOT / "tests/workflow/configs/tiny.yaml"])
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--out", type=Path, help="write the Markdown table here too")
    args = parser.parse_args()

    args.workdir.mkdir(parents=True, exist_ok=True)
    warm_up = snakemake(args.source, args.workdir, args.configfile, "--cores", "2")
    rerun = snakemake(args.source, args.workdir, args.configfile, "--cores", "1", "--forcerun", "score", "evaluate")
    table = rule_times(args.workdir / "results", ["score", "evaluate"]).to_markdown(index=False)
    commit = subprocess.run(["git", "-C", str(args.source), "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    text = (
        f"Source {args.source} (commit {commit}), configs {', '.join(p.name for p in args.configfile)}; warm-up run {warm_up:.0f} s, "
        f"then score and evaluate rerun one at a time with warm caches in {rerun:.0f} s:\n\n{table}\n"
    )
    print_report(text, args.out)


if __name__ == "__main__":
    main()
