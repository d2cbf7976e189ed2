# fsad-bench: few-shot / zero-shot industrial anomaly detection benchmark.
# Stages: data -> features -> fit -> scores -> evaluation/report (see DESIGN.md). All logic lives in fsad/.
from snakemake.utils import min_version

min_version("9.20")


# A config file given on the command line is the whole config (a benchmark of config/benchmarks/, or a copy of the
# demo); only without one does the embedded demo run. Several --configfile files still merge, in order.
if not workflow.overwrite_configfiles:

    configfile: f"{workflow.basedir}/config/config.yaml"



report: "report/workflow.rst"


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/features.smk"
include: "rules/diffusion.smk"
include: "rules/fit.smk"
include: "rules/scores.smk"
include: "rules/report.smk"
include: "rules/inspect.smk"


rule all:
    input:
        all_targets(),
    default_target: True
