"""Rule extract_generated_features: encode a run's pool or personalized images into their own feature store."""

from fsad.devices import claim_device
from fsad.diffusion.image_sets import generated_image_paths
from fsad.features.extract import extract_category
from fsad.logs import job_logging

smk = snakemake  # noqa: F821
with job_logging(smk.log[0]) as log, claim_device() as device:
    summary = extract_category(
        backbone_spec=smk.params.backbone,
        backbone_name=smk.wildcards.backbone,
        image_paths=generated_image_paths(smk.input.images),
        cache_path=smk.output.store,
        window_sizes=smk.params.window_sizes,
        batch_size=smk.params.backbone["batch_size"],
        device=device,
        weights_fallback=smk.params.weights_fallback,
        seed=smk.params.seed,
        threads=smk.threads,
        layers=smk.params.layers,
        vv_layers=smk.params.vv_layers,
    )
    log.info("features: %s", summary)
