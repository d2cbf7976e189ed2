"""Time per rule of a finished run: wall seconds from Snakemake's benchmark files, start-up from the job logs.

Each job's benchmark TSV (``results/benchmarks/<rule>/...tsv``) holds its wall time ``s``; each job log holds the
start-up that ``fsad.logs`` writes: ``scoring starts: X s`` (score jobs: the process's start to the method's
first step, inputs read) or else ``start-up: X s`` (the process's start to the script's first line of work).
A log that several runs appended to counts its last entry.

    python bench/job_times.py results            # prints a Markdown table per rule
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pandas as pd

START_UP = re.compile(r"(scoring starts|start-up): ([0-9.]+) s")


def job_start_up(log_text: str) -> float | None:
    """The start-up seconds a job log reports (its last run's; ``scoring starts`` wins over ``start-up``)."""
    found: dict[str, float] = {}
    for what, seconds in START_UP.findall(log_text):
        found[what] = float(seconds)
    return found.get("scoring starts", found.get("start-up"))


def _job_key(path: Path, root: Path) -> str:
    return str(path.relative_to(root).with_suffix(""))


def rule_times(results: str | Path, rules: list[str] | None = None) -> pd.DataFrame:
    """One row per rule: jobs, total and median wall seconds (benchmark files), median and max start-up (logs)."""
    results = Path(results)
    rows = []
    for bench_dir in sorted(p for p in (results / "benchmarks").iterdir() if p.is_dir()):
        rule = bench_dir.name
        if rules and rule not in rules:
            continue
        walls = {_job_key(p, bench_dir): float(pd.read_csv(p, sep="\t")["s"].iloc[-1]) for p in bench_dir.rglob("*.tsv")}
        log_dir = results / "logs" / rule
        start_ups = {_job_key(p, log_dir): job_start_up(p.read_text(errors="replace")) for p in log_dir.rglob("*.log")} if log_dir.exists() else {}
        known = pd.Series([start_ups.get(key) for key in walls], dtype=float).dropna()
        wall = pd.Series(list(walls.values()), dtype=float)
        rows.append({
            "rule": rule,
            "jobs": len(walls),
            "wall s (sum)": round(wall.sum(), 1),
            "wall s (median)": round(wall.median(), 2),
            "start-up s (median)": round(known.median(), 2) if len(known) else None,
            "start-up s (max)": round(known.max(), 2) if len(known) else None,
        })
    return pd.DataFrame(rows)


def print_report(text: str, out: Path | None) -> None:
    """Print a bench script's Markdown report, and write it to ``out`` when given."""
    print(text)
    if out:
        out.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, help="a run's results directory")
    parser.add_argument("--rules", nargs="*", help="only these rules")
    args = parser.parse_args()
    print(rule_times(args.results, args.rules).to_markdown(index=False))


if __name__ == "__main__":
    main()
