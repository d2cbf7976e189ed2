"""Rule statistics_tables: one dataset's bootstrap intervals, paired tests and per-defect-type AUROC."""

from fsad.evaluation.paired_tables import StatisticsOptions, write_statistics_tables
from fsad.evaluation.tables import TableFiles
from fsad.logs import job_logging

smk = snakemake  # noqa: F821
with job_logging(smk.log[0]):
    options = StatisticsOptions(**smk.params.options)
    files = {
        table: TableFiles(smk.output[f"{table}_md"], smk.output[f"{table}_csv"], smk.output[f"{table}_tex"], smk.output[f"{table}_html"])
        for table in options.tables()
    }
    write_statistics_tables(list(smk.input.scores), smk.input.manifest, smk.params.seed, options, files, smk.wildcards.dataset)
