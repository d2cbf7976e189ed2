"""Rule html_table: one CSV table as an HTML page for the report."""

from fsad.evaluation.html_table import write_html_table
from fsad.logs import job_logging

smk = snakemake  # noqa: F821
with job_logging(smk.log[0]):
    write_html_table(smk.input.csv, smk.output.html, smk.wildcards.table)
