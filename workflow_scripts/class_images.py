"""Rule class_images: the base model's images of a category's class prompt (DreamBooth's prior preservation)."""

from fsad.devices import claim_device
from fsad.diffusion.config import job_params
from fsad.diffusion.stages import class_images
from fsad.logs import job_logging

smk = snakemake  # noqa: F821
with job_logging(smk.log[0]), claim_device() as device:
    class_images(job_params(smk.params.generator, smk.config, smk.wildcards.generator, "class_images"), smk.input.base, smk.wildcards.dataset, smk.wildcards.category, smk.params.seed, device, smk.output.images)
