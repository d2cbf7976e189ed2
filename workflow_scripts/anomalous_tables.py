"""Rule anomalous_tables: the anomalous-samples paper's four tables and its defect-size figure."""

from pathlib import Path

from fsad.evaluation.anomalous_tables import write_anomalous_samples_report
from fsad.logs import job_logging

smk = snakemake  # noqa: F821
with job_logging(smk.log[0]):
    write_anomalous_samples_report(
        metrics_csv=smk.input.metrics,
        score_files=list(smk.input.scores),
        detail_files=list(smk.input.details),
        manifests=dict(zip(smk.params.datasets, smk.input.manifests)),
        sub_scores=smk.params.sub_scores,
        out_dir=Path(smk.output.tables[0]).parent,
        figure=smk.output.figure,
    )
