"""Rule method_report_{scorer}: the tables and figures a scorer instance's method declares."""

from fsad.logs import job_logging
from fsad.scorers.method import ReportContext, resolve

smk = snakemake  # noqa: F821
with job_logging(smk.log[0]):
    context = ReportContext(
        metrics_csv=smk.input.metrics,
        score_files=list(smk.input.scores),
        detail_files=list(smk.input.details),
        manifests=dict(zip(smk.params.datasets, smk.input.manifests, strict=True)),
        params=smk.params.params,
        tables_dir=smk.params.tables_dir,
        figures_dir=smk.params.figures_dir,
        html_dir=smk.params.html_dir,
    )
    resolve(smk.params.write)(context)
