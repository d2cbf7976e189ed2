"""Rule collect_metrics: join every run's metrics into metrics/metrics.csv."""

from fsad.evaluation.collect import combine_metrics
from fsad.logs import job_logging

smk = snakemake  # noqa: F821
with job_logging(smk.log[0]):
    combine_metrics(list(smk.input.parts), smk.output.metrics)
