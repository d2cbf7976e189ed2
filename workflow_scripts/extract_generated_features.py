"""Rule extract_generated_features: encode a run's pool or personalized images into their own feature store."""

from fsad.backbones.spec import backbone_name, run_settings
from fsad.devices import claim_device
from fsad.diffusion.image_sets import generated_image_paths
from fsad.features.extract import ExtractJob, extract
from fsad.logs import job_logging

smk = snakemake  # noqa: F821
job = ExtractJob(
    backbone_key=smk.wildcards.backbone,
    backbone_spec=smk.params.backbone,
    image_paths=generated_image_paths(smk.input.images),
    store_path=smk.output.store,
    window_sizes=smk.params.window_sizes,
    layers=smk.params.layers,
    vv_layers=smk.params.vv_layers,
    mid_layers=smk.params.mid_layers,
    **run_settings(smk.config, backbone_name(smk.wildcards.backbone)),
    weights_fallback=smk.params.weights_fallback,
    seed=smk.params.seed,
    threads=smk.threads,
)
with job_logging(smk.log[0]) as log, claim_device() as device:
    log.info("features: %s", extract(job, device))
