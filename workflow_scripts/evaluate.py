"""Rule evaluate: metrics of one score file (long-format rows, keyed by the keys the file carries)."""

from fsad.evaluation.collect import evaluate_run, write_metrics
from fsad.logs import job_logging

smk = snakemake  # noqa: F821
with job_logging(smk.log[0]):
    rows = evaluate_run(
        smk.input.scores,
        smk.input.maps,
        map_size=smk.params.map_size,
        fpr_limit=smk.params.fpr_limit,
        manifest_path=smk.input.manifest,
    )
    write_metrics(rows, smk.output.metrics)
