"""Rule generate_pool: one run's anomaly-free pool from its fine-tuned model."""

from fsad.devices import claim_device
from fsad.diffusion.config import job_params
from fsad.diffusion.stages import pool
from fsad.logs import job_logging

smk = snakemake  # noqa: F821
with job_logging(smk.log[0]), claim_device() as device:
    pool(job_params(smk.params.generator, smk.config, smk.wildcards.generator, "pool"), smk.input.split, smk.input.manifest, smk.input.model, smk.params.seed, device, smk.output.pool)
