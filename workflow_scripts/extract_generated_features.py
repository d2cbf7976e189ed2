"""Rule extract_generated_features: encode a run's pool or personalized images into their own feature store."""

from fsad.devices import claim_device
from fsad.diffusion.image_sets import generated_image_paths
from fsad.features.extract import extract_with_rule_params
from fsad.logs import job_logging

smk = snakemake  # noqa: F821
with job_logging(smk.log[0]) as log, claim_device() as device:
    summary = extract_with_rule_params(
        smk.params,
        smk.config,
        backbone_name=smk.wildcards.backbone,
        image_paths=generated_image_paths(smk.input.images),
        cache_path=smk.output.store,
        device=device,
        threads=smk.threads,
    )
    log.info("features: %s", summary)
