"""Rule plots: ROC curves and the per-category AUROC bar chart of one dataset."""

from fsad.evaluation.collect import read_score_files
from fsad.evaluation.collect import read_metrics
from fsad.evaluation.plots import auroc_bar_chart, roc_figure
from fsad.logs import job_logging

smk = snakemake  # noqa: F821
with job_logging(smk.log[0]):
    roc_figure(read_score_files(list(smk.input.scores)), smk.wildcards.dataset, smk.output.roc)
    auroc_bar_chart(read_metrics(smk.input.metrics), smk.wildcards.dataset, smk.output.auroc)
