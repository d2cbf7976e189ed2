"""Write envs/fsad.yaml from requirements/lock.txt: the conda environment of every rule, at the lock's exact pins.

The pins are written into the environment file itself (not a ``-c`` reference to the lock), because Snakemake's
software-env rerun trigger hashes the file's content: a bump of the lock then changes the environment every job
ran in, and ``snakemake --rerun-triggers software-env`` (a default trigger) plans what it built again.

    python requirements/write_env.py
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOCK, ENV = ROOT / "requirements" / "lock.txt", ROOT / "envs" / "fsad.yaml"
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*==[^\s;#]+)")
HEADER = """\
# Conda environment of every rule (each runs the fsad package): python 3.11 and the exact pins of
# requirements/lock.txt, written by `python requirements/write_env.py` (do not edit by hand). The pins are in this
# file, so a change of pins changes it, and Snakemake's software-env trigger reruns what the old environment built.
# conda runs the pip section from this file's folder, so ".." is the repository root.
"""


def pins(lock: Path = LOCK) -> list[str]:
    """The ``name==version`` lines of the lock, in its order."""
    return [match[1] for line in lock.read_text().splitlines() if (match := PIN.match(line))]


def environment_file(lock: Path = LOCK) -> str:
    lines = [HEADER + "channels:", "  - conda-forge", "  - nodefaults", "dependencies:", "  - python=3.11", "  - pip", "  - pip:"]
    lines += [f"      - {pin}" for pin in pins(lock)]
    lines += ["      - -e .."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    ENV.write_text(environment_file())
    print(f"{ENV}: {len(pins())} pins from {LOCK}")
