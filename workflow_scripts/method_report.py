"""Rule method_report_{scorer}: the tables and figures a scorer instance's method declares."""

from pathlib import Path

from fsad.logs import job_logging
from fsad.scorers.method import ReportContext, resolve

smk = snakemake  # noqa: F821


def folder_of(suffix: str) -> Path | None:
    """The folder of the outputs ending in ``suffix`` (the rule declares every file; the folders follow from them)."""
    folders = {Path(path).parent for path in smk.output if path.endswith(suffix)}
    assert len(folders) <= 1, f"outputs ending in {suffix} span several folders: {sorted(folders)}"
    return folders.pop() if folders else None


with job_logging(smk.log[0]):
    context = ReportContext(
        metrics_csv=smk.input.metrics,
        score_files=list(smk.input.scores),
        detail_files=list(smk.input.details),
        manifests=dict(zip(smk.params.datasets, smk.input.manifests, strict=True)),
        params=smk.params.params,
        tables_dir=folder_of(".md"),
        figures_dir=folder_of(".png"),
        html_dir=folder_of(".html"),
    )
    resolve(smk.params.write)(context)
