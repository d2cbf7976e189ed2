"""Rule tables: one dataset's paper-style table in Markdown, CSV and LaTeX."""

from fsad.evaluation.collect import read_metrics
from fsad.evaluation.tables import write_dataset_tables
from fsad.logs import job_logging

smk = snakemake  # noqa: F821
with job_logging(smk.log[0]):
    write_dataset_tables(read_metrics(smk.input.metrics), smk.wildcards.dataset, smk.output.md, smk.output.csv, smk.output.tex)
