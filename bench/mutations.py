"""Mutation check of the wiring tests: apply named source mutations, one at a time, to a temporary copy of the
checkout, run the tests that should catch each, and print which mutations survive.

    python bench/mutations.py                 # every mutation
    python bench/mutations.py faprompt_ce_focal_swapped dreambooth_reads_test_images
    python bench/mutations.py --list

Each mutation is a plausible wiring bug: a parameter dropped, replaced by its default, swapped with its
neighbour, the wrong split or dataset feeding a stage, the workflow passing the wrong value. A survivor is a gap in
the tests (or an equivalent mutation, which cannot change any output: say why in the mutation's ``why``).
A developer tool, not part of CI: each mutation runs its tests in a fresh copy (seconds to a few minutes each).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
IGNORED = shutil.ignore_patterns(".git", "results", ".snakemake", "__pycache__", ".pytest_cache", "*.egg-info", ".whl", ".venv")


@dataclass(frozen=True)
class Mutation:
    """Replace ``old`` (which must occur exactly once in ``file``) by ``new``; ``tests`` must then fail."""

    name: str
    file: str
    old: str
    new: str
    tests: tuple[str, ...]
    why: str = ""


U = "tests/unit/"
MUTATIONS = [
    # --- WinCLIP / anomalous memory -------------------------------------------------------------
    Mutation("winclip_temperature_ignored", "fsad/scorers/winclip/scorer.py", "PLACEHOLDER", "PLACEHOLDER", (U + "test_parameters_winclip.py",)),
]


def copy_checkout(target: Path) -> Path:
    """The working tree as it is now (committed or not), without results and caches."""
    shutil.copytree(ROOT, target, ignore=IGNORED, symlinks=True)
    return target


def apply(mutation: Mutation, tree: Path) -> None:
    path = tree / mutation.file
    text = path.read_text()
    count = text.count(mutation.old)
    if count != 1:
        raise SystemExit(f"mutation {mutation.name}: {mutation.file} holds its text {count} times, not once; update the mutation")
    path.write_text(text.replace(mutation.old, mutation.new))


def run_tests(tree: Path, tests: tuple[str, ...], timeout: int) -> tuple[bool, float, str]:
    """Whether the tests pass in ``tree`` (its ``fsad`` first on the path), the seconds taken, the output's tail."""
    env = {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": "1"}
    started = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests], cwd=tree, env=env,
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return False, time.perf_counter() - started, "timed out (counted as killed)"
    return proc.returncode == 0, time.perf_counter() - started, (proc.stdout + proc.stderr)[-1500:]


def check_imports_the_copy(tree: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    where = subprocess.run([sys.executable, "-c", "import fsad; print(fsad.__file__)"], cwd=tree, env=env, capture_output=True, text=True, check=True)
    if not where.stdout.strip().startswith(str(tree)):
        raise SystemExit(f"the copy's tests would import fsad from {where.stdout.strip()}, not from {tree}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="mutations to run (default: all)")
    parser.add_argument("--list", action="store_true", help="list the mutations and their tests")
    parser.add_argument("--timeout", type=int, default=1800, help="seconds per mutation's test run")
    parser.add_argument("--no-baseline", action="store_true", help="skip the check that the unmutated tests pass")
    args = parser.parse_args()
    by_name = {m.name: m for m in MUTATIONS}
    unknown = [n for n in args.names if n not in by_name]
    if unknown:
        parser.error(f"unknown mutations {unknown}; --list shows them")
    chosen = [by_name[n] for n in args.names] or MUTATIONS
    if args.list:
        for m in chosen:
            print(f"{m.name:45s} {m.file}  ->  {' '.join(m.tests)}")
        return 0

    survivors = []
    with tempfile.TemporaryDirectory(prefix="fsad-mutations-") as scratch:
        pristine = copy_checkout(Path(scratch) / "pristine")
        check_imports_the_copy(pristine)
        for m in chosen:  # every mutation's text must be there before anything runs
            apply(m, copy_checkout(Path(scratch) / "probe"))
            shutil.rmtree(Path(scratch) / "probe")
        if not args.no_baseline:
            tests = tuple(sorted({t for m in chosen for t in m.tests}))
            passed, seconds, tail = run_tests(pristine, tests, args.timeout)
            print(f"baseline: {'passes' if passed else 'FAILS'} ({seconds:.0f} s, {len(tests)} test files)")
            if not passed:
                print(tail)
                return 2
        for m in chosen:
            tree = Path(scratch) / m.name
            shutil.copytree(pristine, tree, symlinks=True)
            apply(m, tree)
            passed, seconds, _ = run_tests(tree, m.tests, args.timeout)
            print(f"{'SURVIVED' if passed else 'killed  '}  {m.name:45s} {seconds:6.0f} s" + (f"  ({m.why})" if passed and m.why else ""), flush=True)
            if passed:
                survivors.append(m.name)
            shutil.rmtree(tree)
    print(f"\n{len(chosen) - len(survivors)} of {len(chosen)} mutations killed" + (f"; survivors: {', '.join(survivors)}" if survivors else ""))
    return 1 if survivors else 0


if __name__ == "__main__":
    sys.exit(main())
