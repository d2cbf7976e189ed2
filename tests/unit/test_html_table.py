"""A CSV table becomes an HTML page with the same cells, escaped, written atomically."""

from __future__ import annotations

from html.parser import HTMLParser

import pandas as pd
import pytest

from fsad.evaluation.html_table import write_html_table


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


def test_cells_keep_the_text_of_the_csv(tmp_path):
    pd.DataFrame({"category": ["carpet", "mean"], "winclip / zs / I-AUROC": ["91.0", "90.50 ± 0.25"]}).to_csv(tmp_path / "t.csv", index=False)
    out = write_html_table(tmp_path / "t.csv", tmp_path / "html" / "t.html", "mvtec_ad: per-category results")
    parser = Cells()
    parser.feed(out.read_text())
    assert parser.cells == ["category", "winclip / zs / I-AUROC", "carpet", "91.0", "mean", "90.50 ± 0.25"]
    assert "<title>mvtec_ad: per-category results</title>" in out.read_text()


def test_markup_in_cells_is_escaped(tmp_path):
    pd.DataFrame({"category": ["<b>x</b>"], "value": ["1"]}).to_csv(tmp_path / "t.csv", index=False)
    text = write_html_table(tmp_path / "t.csv", tmp_path / "t.html", "t").read_text()
    assert "&lt;b&gt;x&lt;/b&gt;" in text and "<b>x</b>" not in text


def test_an_empty_table_names_the_file(tmp_path):
    (tmp_path / "t.csv").write_text("category,value\n")
    with pytest.raises(ValueError, match="t.csv: the table has no rows"):
        write_html_table(tmp_path / "t.csv", tmp_path / "t.html", "t")
