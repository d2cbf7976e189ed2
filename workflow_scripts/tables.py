"""Rule tables: one dataset's paper-style table in Markdown, CSV, LaTeX and HTML."""

from fsad.evaluation.collect import read_metrics
from fsad.evaluation.summary import write_dataset_tables
from fsad.evaluation.tables import TableFiles
from fsad.logs import job_logging

smk = snakemake  # noqa: F821
with job_logging(smk.log[0]):
    files = TableFiles(smk.output.md, smk.output.csv, smk.output.tex, smk.output.html)
    write_dataset_tables(read_metrics(smk.input.metrics), smk.wildcards.dataset, files)
