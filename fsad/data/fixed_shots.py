"""Fixed few-shot references read from a file (the papers' shots), instead of drawn ones, and PromptAD's files converted.

A dataset entry with ``shots_file: <path>`` takes every normal reference of every few-shot run from that file; the
test subset, anomalous references and validation normals are drawn as usual (:mod:`fsad.data.splits`). The file is
YAML (or JSON, its subset)::

    format: fsad-shots/1
    source: PromptAD datasets/seeds_mvtec            # free text: where the shots come from
    shots:
      bottle:                                        # a category of the dataset
        1: [[bottle-train-good-131]]                 # normal shots per run -> one list of image ids per run
        2: [[bottle-train-good-101, bottle-train-good-048]]
        4: [[bottle-train-good-029, ...], [...]]     # run 0, run 1, ...

Image ids are the manifest's (``results/data/<dataset>/manifest.csv``); each must be a training normal of its
category. A setting with ``normal_shots: k`` runs ``r`` reads ``shots[category][k][r]``. A category, shot count,
run or image the file lacks stops the job with the file's name and the fix.

:func:`convert_promptad` writes such a file from PromptAD's ``datasets/seeds_{mvtec,visa}/<category>/
selected_samples_per_run.txt`` (lines ``#k: i j ...``, one run per shot count): each number indexes the category's
training normals, which PromptAD lists with an unsorted ``glob`` of ``train/good`` (so the order depends on the file
system); here they are the training normals sorted by file name, the order of a sorted listing.
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from fsad.io import atomic_path

FORMAT = "fsad-shots/1"
PROMPTAD_FILE = "selected_samples_per_run.txt"
_PROMPTAD_LINE = re.compile(r"^#(\d+):((?:\s+\d+)+)\s*$")


class ShotsFileError(ValueError):
    """A shots file that is malformed, or lacks what a split asks of it."""


@dataclass(frozen=True)
class FixedShots:
    """The shots of one file: category -> normal shots per run -> one tuple of image ids per run."""

    path: str
    source: str
    shots: dict[str, dict[int, tuple[tuple[str, ...], ...]]]

    def images(self, category: str) -> list[str]:
        """Every image the file lists for ``category``, sorted (none when it lists none)."""
        return sorted({i for runs in self.shots.get(category, {}).values() for run in runs for i in run})

    def normal_refs(self, category: str, normal_shots: int, run: int) -> list[str]:
        """The normal references of ``run`` of a setting with ``normal_shots`` shots in ``category``.

        Raises:
            ShotsFileError: naming the file and the fix, when it lacks the category, the shot count or the run.
        """
        if category not in self.shots:
            raise ShotsFileError(
                f"{self.path}: no shots for category {category!r} (it has {sorted(self.shots)}); add the category to the file, "
                f"restrict the dataset's `categories:` to those it has, or remove `shots_file:` from the dataset to draw the shots"
            )
        by_count = self.shots[category]
        if normal_shots not in by_count:
            raise ShotsFileError(
                f"{self.path}: category {category!r} has no runs of {normal_shots} normal shots (it has {sorted(by_count)}); "
                f"add them to the file, or give the setting one of those normal_shots"
            )
        runs = by_count[normal_shots]
        if run >= len(runs):
            raise ShotsFileError(
                f"{self.path}: category {category!r} lists {len(runs)} run(s) of {normal_shots} shots, run {run} is asked; "
                f"lower `runs:` (of the config or the setting) to {len(runs)}, or add runs to the file"
            )
        return list(runs[run])

    def check_images(self, manifest: pd.DataFrame, category: str) -> None:
        """Raise, naming the file, when an image it lists for ``category`` is not a training normal of it in ``manifest``."""
        rows = manifest[manifest["category"] == category]
        normals = set(rows.loc[(rows["split"] == "train") & (rows["label"] == 0), "image_id"])
        missing = [i for i in self.images(category) if i not in normals]
        if missing:
            raise ShotsFileError(
                f"{self.path}: images {missing[:5]}{' ...' if len(missing) > 5 else ''} ({len(missing)} of category {category!r}) "
                f"are not training normals of the dataset's manifest; the file was written for another copy or layout of the "
                f"dataset: convert the papers' shots again against this manifest (python -m fsad.data.fixed_shots promptad ...)"
            )


def _shots_error(path: str | Path, problem: str) -> ShotsFileError:
    return ShotsFileError(f"{path}: {problem}; see the format in fsad/data/fixed_shots.py (README, 'The papers' shots')")


def parse_shots(data: Any, path: str | Path) -> FixedShots:
    """Check the content of a shots file (see the module docstring) and return its shots."""
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise _shots_error(path, f"not a shots file of format {FORMAT!r}")
    categories = data.get("shots")
    if not isinstance(categories, dict) or not categories:
        raise _shots_error(path, "`shots:` must map each category to its shot counts")
    shots: dict[str, dict[int, tuple[tuple[str, ...], ...]]] = {}
    for category, by_count in categories.items():
        if not isinstance(by_count, dict) or not by_count:
            raise _shots_error(path, f"category {category!r} must map shot counts to lists of runs")
        shots[str(category)] = {}
        for count, runs in by_count.items():
            if not str(count).isdigit() or int(count) < 1:
                raise _shots_error(path, f"category {category!r}: {count!r} is not a positive shot count")
            if not isinstance(runs, list) or not runs or not all(isinstance(run, list) for run in runs):
                raise _shots_error(path, f"category {category!r}, {count} shots: give a list of runs, each a list of image ids")
            for number, run in enumerate(runs):
                if len(run) != int(count) or len(set(run)) != len(run):
                    raise _shots_error(path, f"category {category!r}, {count} shots, run {number}: {len(run)} images {run}, expected {count} distinct ones")
            shots[str(category)][int(count)] = tuple(tuple(str(i) for i in run) for run in runs)
    return FixedShots(str(path), str(data.get("source", "")), shots)


def read_shots(path: str | Path) -> FixedShots:
    """The shots file at ``path``."""
    path = Path(path)
    if not path.is_file():
        raise ShotsFileError(f"{path}: shots file not found; write it (format in fsad/data/fixed_shots.py), or remove `shots_file:` from the dataset to draw the shots")
    return parse_shots(yaml.safe_load(path.read_text()), path)


def read_promptad_file(path: str | Path) -> dict[int, list[int]]:
    """PromptAD's ``selected_samples_per_run.txt``: shot count -> the indices of its one run (``#k: i j ...`` lines)."""
    indices: dict[int, list[int]] = {}
    for number, line in enumerate(Path(path).read_text().splitlines(), start=1):
        if not line.strip():
            continue
        match = _PROMPTAD_LINE.match(line.strip())
        if not match:
            raise ShotsFileError(f"{path}, line {number}: {line!r} is not PromptAD's '#k: i j ...'")
        count, values = int(match.group(1)), [int(v) for v in match.group(2).split()]
        if len(values) != count:
            raise ShotsFileError(f"{path}, line {number}: {len(values)} indices for {count} shots")
        indices[count] = values  # PromptAD reads the last line of a shot count
    return indices


def training_normals_by_name(manifest: pd.DataFrame, category: str) -> list[str]:
    """The image ids of ``category``'s training normals, in the order of their file names (a sorted ``train/good`` listing)."""
    rows = manifest[(manifest["category"] == category) & (manifest["split"] == "train") & (manifest["label"] == 0)]
    return [row.image_id for row in sorted(rows.itertuples(), key=lambda row: Path(row.image_path).name)]


def convert_promptad(seeds_dir: str | Path, manifest: pd.DataFrame, source: str | None = None) -> dict[str, Any]:
    """The content of a shots file for every ``<category>/selected_samples_per_run.txt`` under ``seeds_dir``.

    Raises:
        ShotsFileError: no PromptAD file under ``seeds_dir``, a category the manifest lacks, or an index past its
            training normals.
    """
    seeds_dir = Path(seeds_dir)
    files = sorted(seeds_dir.glob(f"*/{PROMPTAD_FILE}"))
    if not files:
        raise ShotsFileError(f"{seeds_dir}: no <category>/{PROMPTAD_FILE}; give PromptAD's datasets/seeds_mvtec or datasets/seeds_visa")
    shots: dict[str, dict[int, list[list[str]]]] = {}
    for file in files:
        category = file.parent.name
        normals = training_normals_by_name(manifest, category)
        if not normals:
            raise ShotsFileError(f"{file}: category {category!r} has no training normals in the manifest; convert against the dataset's own manifest")
        shots[category] = {}
        for count, indices in sorted(read_promptad_file(file).items()):
            past = [i for i in indices if i >= len(normals)]
            if past:
                raise ShotsFileError(f"{file}: indices {past} are past the {len(normals)} training normals of {category!r} in the manifest")
            shots[category][count] = [[normals[i] for i in indices]]
    return {"format": FORMAT, "source": source or f"PromptAD {seeds_dir.name} (converted)", "shots": shots}


def write_shots(path: str | Path, content: dict[str, Any]) -> None:
    """Write a shots file atomically (after checking it parses)."""
    parse_shots(content, path)
    with atomic_path(path) as tmp:
        Path(tmp).write_text(yaml.safe_dump(content, sort_keys=False))


def main(argv: list[str] | None = None) -> None:
    """``python -m fsad.data.fixed_shots promptad SEEDS_DIR MANIFEST OUT``: convert PromptAD's shots of one dataset."""
    from fsad.data.manifest import read_manifest

    parser = argparse.ArgumentParser(prog="python -m fsad.data.fixed_shots", description=main.__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    promptad = commands.add_parser("promptad", help="convert PromptAD's datasets/seeds_{mvtec,visa}")
    promptad.add_argument("seeds_dir", help="PromptAD's datasets/seeds_mvtec or datasets/seeds_visa")
    promptad.add_argument("manifest", help="the dataset's manifest (results/data/<dataset>/manifest.csv)")
    promptad.add_argument("out", help="the shots file to write (YAML)")
    args = parser.parse_args(argv)
    write_shots(args.out, convert_promptad(args.seeds_dir, read_manifest(args.manifest)))


if __name__ == "__main__":
    main()
