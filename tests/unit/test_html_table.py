"""Every table's HTML page shows the cells of its CSV, escaped, with its notes."""

from __future__ import annotations

import csv as csv_module
import io
from html.parser import HTMLParser

import pandas as pd

from fsad.evaluation.tables import NA_MISSING, NA_NOTES, NA_UNDEFINED, TableFiles, write_table


class Cells(HTMLParser):
    def __init__(self):
        super().__init__()
        self.cells, self._in_cell = [], False

    def handle_starttag(self, tag, attrs):
        self._in_cell = tag in ("td", "th")

    def handle_endtag(self, tag):
        self._in_cell = False

    def handle_data(self, data):
        if self._in_cell:
            self.cells.append(data)


def written(tmp_path, table: pd.DataFrame, caption: str = "t") -> tuple[str, str]:
    files = TableFiles.named(tmp_path, "t", tmp_path / "html")
    write_table(table, files, caption, pd.DataFrame({"weights": ["laion400m_e31"]}))
    return files.html.read_text(), files.csv.read_text()


def test_cells_keep_the_text_of_the_csv(tmp_path):
    table = pd.DataFrame({"category": ["carpet", "mean"], "winclip / zs / I-AUROC": ["91.0", "90.50 ± 0.25"]})
    page, csv = written(tmp_path, table, "mvtec_ad: per-category results")
    parser = Cells()
    parser.feed(page)
    header, *rows = list(csv_module.reader(io.StringIO(csv)))
    assert parser.cells == [*header, *(cell for row in rows for cell in row)]
    assert parser.cells == ["category", "winclip / zs / I-AUROC", "weights", "carpet", "91.0", "laion400m_e31", "mean", "90.50 ± 0.25", "laion400m_e31"]
    assert "<title>mvtec_ad: per-category results</title>" in page


def test_markup_in_cells_is_escaped(tmp_path):
    page, _ = written(tmp_path, pd.DataFrame({"category": ["<b>x</b>"], "value": ["1"]}))
    assert "&lt;b&gt;x&lt;/b&gt;" in page and "<b>x</b>" not in page


def test_the_page_carries_the_footnote_of_each_na_it_shows(tmp_path):
    page, _ = written(tmp_path, pd.DataFrame({"category": ["carpet", "mean"], "value": ["91.0", NA_UNDEFINED]}))
    assert NA_NOTES[NA_UNDEFINED] in page and NA_NOTES[NA_MISSING] not in page
