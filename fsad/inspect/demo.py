"""The demonstration folder of an inspection: test images of the setup's own run, and one file that is not an image."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd

NOT_AN_IMAGE = "not_an_image.png"


def demo_images(scores: pd.DataFrame, count: int) -> list[str]:
    """``count`` image paths of a score file's rows, taking normal and anomalous images in turn (score-file order)."""
    by_label = [list(group["image_path"]) for _, group in scores.groupby("label", sort=True)]
    taken: list[str] = []
    for position in range(max(map(len, by_label), default=0)):
        taken += [paths[position] for paths in by_label if position < len(paths)]
    return taken[:count]


def write_demo_folder(saved_scores: str | Path, count: int, folder: str | Path) -> list[Path]:
    """Copy :func:`demo_images` of the run's score file into ``folder`` (``<label>_<name>``) and write a text file named
    like a PNG, which the inspection must list as unreadable; return the files written."""
    scores = pd.read_parquet(saved_scores)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    labels = dict(zip(scores["image_path"], scores["label"]))
    written = []
    for path in demo_images(scores, count):
        target = folder / f"{'anomalous' if labels[path] == 1 else 'normal'}_{Path(path).parent.name}_{Path(path).name}"
        shutil.copyfile(path, target)
        written.append(target)
    broken = folder / NOT_AN_IMAGE
    broken.write_text("this file is text, not an image: the inspection lists it as unreadable and scores the others\n")
    return [*written, broken]
