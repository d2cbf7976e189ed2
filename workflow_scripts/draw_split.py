"""Rule draw_split: one (setting, run)'s references, validation images and test list."""

from fsad.data.splits import draw_split
from fsad.io import read_json, write_json
from fsad.logs import job_logging

smk = snakemake  # noqa: F821
with job_logging(smk.log[0]):
    split = draw_split(read_json(smk.input.pool), smk.params.setting, int(smk.wildcards.run))
    write_json(smk.output.split, split)
