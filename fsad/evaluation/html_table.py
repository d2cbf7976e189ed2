"""CSV tables as small self-contained HTML pages, the form in which a Snakemake report shows a table.

Snakemake's report offers .csv/.md files only as downloads; an HTML page is displayed inline.
"""

from __future__ import annotations

import html
from pathlib import Path

import pandas as pd

from fsad.io import write_text

_STYLE = """
body { font-family: sans-serif; font-size: 13px; margin: 1em; color: #111; background: #fff; }
h1 { font-size: 16px; }
table { border-collapse: collapse; }
th, td { border: 1px solid #bbb; padding: 3px 7px; text-align: right; white-space: nowrap; }
th { background: #eee; }
td:first-child, th:first-child { text-align: left; }
tbody tr:nth-child(even) { background: #f7f7f7; }
"""


def write_html_table(csv_path: str | Path, html_path: str | Path, title: str) -> Path:
    """Render ``csv_path`` cell for cell (text as written, no re-formatting) as an HTML page with ``title``."""
    csv_path = Path(csv_path)
    table = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    if table.empty:
        raise ValueError(f"{csv_path}: the table has no rows; rerun the rule that writes it")
    body = table.to_html(index=False, border=0, escape=True)
    page = (
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">"
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head>\n"
        f"<body><h1>{html.escape(title)}</h1>\n{body}\n"
        f"<p>Source: {html.escape(csv_path.name)}</p></body></html>\n"
    )
    html_path = Path(html_path)
    write_text(html_path, page)
    return html_path
