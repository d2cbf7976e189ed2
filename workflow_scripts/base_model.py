"""Rule base_model: a generator's base model saved once as a diffusers pipeline directory."""

from fsad.diffusion.stages import base_model
from fsad.logs import job_logging

smk = snakemake  # noqa: F821
with job_logging(smk.log[0]):
    base_model(smk.params.base_model, smk.params.seed, smk.output.base)
