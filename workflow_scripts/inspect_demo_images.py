"""Rule inspect_demo_images: a demonstration folder of an inspection (test images of its run and one non-image)."""

from fsad.inspect.demo import write_demo_folder
from fsad.logs import job_logging

smk = snakemake  # noqa: F821
with job_logging(smk.log[0]):
    write_demo_folder(smk.input.saved_scores, smk.params.demo_count, smk.output.images)
