"""Rule dreambooth: fine-tune a generator's base model on one run's normal references."""

from fsad.devices import claim_device
from fsad.diffusion.config import job_params
from fsad.diffusion.stages import dreambooth
from fsad.logs import job_logging

smk = snakemake  # noqa: F821
with job_logging(smk.log[0]), claim_device() as device:
    dreambooth(job_params(smk.params.generator, smk.config, smk.wildcards.generator, "dreambooth"), smk.input.base, smk.input.split, smk.input.manifest, smk.input.get("class_images"), smk.params.seed, device, smk.output.model)
