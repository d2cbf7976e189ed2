"""`snakemake --report` of the tiny run: every table and figure is in it, and a real browser shows the tables.

The browser checks use Debian's chromium (installed by .ci/report-setup.sh) in headless mode.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image, ImageStat

from .conftest import snakemake

CHROMIUM = shutil.which("chromium")
needs_chromium = pytest.mark.requires(
    None if CHROMIUM else "Debian's chromium is not installed; run .ci/report-setup.sh (apt-get install -y chromium)",
    "FSAD_REQUIRE_CHROMIUM",
)
# The tiny run is a session fixture: under pytest-xdist (--dist loadgroup) its readers share one worker.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("tiny_run")]

# Clicks through the report like a reader: "Tables" in the menu, then the view button of the summary
# table, and copies the table the report shows (inside an iframe) into the page so --dump-dom holds it.
CLICK_SUMMARY_TABLE = """<script>
(() => {
  const waitFor = (find, then) => { const found = find(); found ? then(found) : setTimeout(() => waitFor(find, then), 100); };
  const menuLink = (text) => Array.from(document.querySelectorAll("nav a")).find((a) => a.textContent.trim() === text);
  const resultRow = (text) => Array.from(document.querySelectorAll("nav tr")).find((r) => r.textContent.trim() === text && r.querySelector("a"));
  const shownTable = () => { const frame = document.querySelector("iframe"); const doc = frame && frame.contentDocument; return doc && doc.querySelector("table") && doc; };
  waitFor(() => menuLink("Tables"), (link) => { link.click();
    waitFor(() => resultRow("summary"), (row) => { row.querySelector("a").click();
      waitFor(shownTable, (doc) => {
        const copy = document.createElement("div");
        copy.id = "fsad-shown-table";
        copy.innerHTML = doc.body.innerHTML;
        document.body.appendChild(copy);
      });
    });
  });
})();
</script>
"""


@pytest.fixture(scope="module")
def report(tiny_run):
    workdir, _ = tiny_run
    path = workdir / "report.html"
    snakemake(workdir, "--report", str(path))
    return workdir, path


def run_chromium(tmp_path: Path, *args: str) -> str:
    """Headless chromium with a throw-away profile and no network chatter; returns its stdout."""
    cmd = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
        f"--user-data-dir={tmp_path / 'chromium-profile'}", "--virtual-time-budget=10000", *args,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, f"chromium failed ({proc.returncode}): {proc.stderr[-3000:]}"
    return proc.stdout


def visible_text(dom: str) -> str:
    """The rendered page's text: scripts (which hold the report's raw data) and styles removed."""
    dom = re.sub(r"<(script|style)\b.*?</\1>", " ", dom, flags=re.S)
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", dom))


class TableRows(HTMLParser):
    """Rows of the HTML tables in a fragment, as lists of cell texts."""

    def __init__(self):
        super().__init__()
        self.rows: list[list[str]] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        if tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.rows[-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def report_categories(path: Path) -> dict[str, dict[str, list[str]]]:
    """The report's result index: category -> subcategory -> result paths."""
    match = re.search(r"\bcategories = (\{.*?\});\n", path.read_text())
    assert match, f"{path}: no result categories found; is this a Snakemake report?"
    return json.loads(match.group(1))


def test_report_holds_every_table_and_figure_and_the_galleries(report):
    workdir, path = report
    listed = {p for subcategories in report_categories(path).values() for paths in subcategories.values() for p in paths}
    results = workdir / "results"
    expected = [*(results / "tables").rglob("*.csv"), *(results / "tables").rglob("*.md"), *(results / "tables" / "html").rglob("*.html"),
                *(results / "plots").rglob("*.png")]
    assert {str(p.relative_to(workdir)) for p in expected} <= listed
    galleries = [p for p in listed if p.startswith("results/plots/gallery/")]
    # one gallery per (scorer, dataset, category, setting) of the tiny config: winclip on 2 datasets x 2 settings, anomalous_memory 1
    assert len(galleries) == 5, galleries


@needs_chromium
def test_report_page_loads_in_chromium_with_its_menu_and_workflow_description(report, tmp_path):
    _, path = report
    text = visible_text(run_chromium(tmp_path, "--dump-dom", path.as_uri()))
    assert "Loading Snakemake Report" in text  # the static shell ...
    for rendered in ("Tables", "Table files", "Plots", "Anomaly maps", "few-shot and zero-shot industrial anomaly detection"):
        assert rendered in text, f"{rendered!r} not rendered; page text: {text[:1500]}"  # ... and what React rendered


@needs_chromium
def test_report_shows_the_summary_table_with_values_from_the_metrics(report, tmp_path):
    workdir, path = report
    clicking = tmp_path / "report_clicking_summary.html"
    page = path.read_text()
    end = page.rindex("</body>")
    clicking.write_text(page[:end] + CLICK_SUMMARY_TABLE + page[end:])
    # the report shows HTML results in a data: iframe; reading it back needs same-origin checks off
    dom = run_chromium(tmp_path, "--disable-web-security", "--dump-dom", clicking.as_uri())
    start = dom.find('id="fsad-shown-table"')
    assert start >= 0, f"the summary table was not shown after clicking; page text: {visible_text(dom)[:1500]}"
    parser = TableRows()
    parser.feed(dom[start:])
    summary = pd.read_csv(workdir / "results" / "tables" / "summary.csv", dtype=str, keep_default_na=False)
    assert parser.rows == [list(summary.columns), *summary.values.tolist()]

    metrics = pd.read_csv(workdir / "results" / "metrics" / "metrics.csv")
    auroc = metrics[(metrics["dataset"] == "textile") & (metrics["scorer"] == "winclip") & (metrics["setting"] == "zs")
                    & (metrics["metric"] == "image_auroc")]["value"].mean()
    header, *rows = parser.rows
    shown = next(row for row in rows if row[:3] == ["textile", "winclip", "zs"])
    assert shown[header.index("I-AUROC")] == f"{100 * auroc:.1f}"

    screenshot = tmp_path / "report_summary.png"
    run_chromium(tmp_path, "--disable-web-security", "--window-size=1400,900", f"--screenshot={screenshot}", clicking.as_uri())
    with Image.open(screenshot) as image:
        assert image.size == (1400, 900)
        assert ImageStat.Stat(image.convert("L")).stddev[0] > 20, "the screenshot is a blank page"
