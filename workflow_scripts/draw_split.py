"""Rule draw_split: one (setting, run)'s references, validation images and test list (normal references from the
dataset's shots file, when there is one)."""

from fsad.data.fixed_shots import read_shots
from fsad.data.splits import draw_split
from fsad.io import read_json, write_json
from fsad.logs import job_logging

smk = snakemake  # noqa: F821
with job_logging(smk.log[0]):
    setting, run = smk.params.setting, int(smk.wildcards.run)
    fixed = None
    if "shots" in smk.input.keys() and setting["normal_shots"] > 0:  # noqa: SIM118 (`in` on a Namedlist tests its paths)
        fixed = read_shots(smk.input.shots).normal_refs(smk.wildcards.category, setting["normal_shots"], run)
    split = draw_split(read_json(smk.input.pool), setting, run, fixed_refs=fixed)
    if fixed is not None:
        split["shots_file"] = str(smk.input.shots)
    write_json(smk.output.split, split)
