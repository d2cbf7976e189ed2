"""Rule summary_table: datasets x scorers x settings in one table."""

from fsad.evaluation.collect import read_metrics
from fsad.evaluation.tables import write_summary_tables
from fsad.logs import job_logging

smk = snakemake  # noqa: F821
with job_logging(smk.log[0]):
    write_summary_tables(read_metrics(smk.input.metrics), smk.output.md, smk.output.csv, smk.output.tex)
