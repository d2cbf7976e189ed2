"""Read written tables back cell by cell, to compare them with the frames they were written from."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd


def markdown_table(path: str | Path) -> pd.DataFrame:
    """The pipe table of a Markdown file as text cells: its header row as columns, ``\\|`` unescaped."""
    lines = [line for line in Path(path).read_text().splitlines() if line.startswith("|")]
    header, separator, *body = [[cell.strip().replace("\\|", "|") for cell in re.split(r"(?<!\\)\|", line)[1:-1]] for line in lines]
    assert all(set(cell) <= set(":-") for cell in separator), f"{path}: no header separator under {header}"
    return pd.DataFrame(body, columns=header)


def csv_table(path: str | Path) -> pd.DataFrame:
    """A written CSV as text cells (no number parsing, no NaN for empty cells)."""
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def as_text(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with a fresh index, unnamed columns and every cell as the text a table file should show."""
    return frame.reset_index(drop=True).rename_axis(columns=None).astype(str)
