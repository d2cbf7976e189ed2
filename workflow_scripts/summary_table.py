"""Rule summary_table: datasets x scorers x settings in one table (Markdown, CSV, LaTeX, HTML)."""

from fsad.evaluation.collect import read_metrics
from fsad.evaluation.summary import write_summary_tables
from fsad.evaluation.tables import TableFiles
from fsad.logs import job_logging

smk = snakemake  # noqa: F821
with job_logging(smk.log[0]):
    files = TableFiles(smk.output.md, smk.output.csv, smk.output.tex, smk.output.html)
    write_summary_tables(read_metrics(smk.input.metrics), files)
