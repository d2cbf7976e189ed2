"""Rules extract_features and extract_generated_features: encode a category's test subset and reference pools into
its store, or a run's generated images (pool or personalized) into their own store."""

import os

from fsad.backbones.spec import backbone_name, run_settings
from fsad.data.manifest import read_manifest
from fsad.data.splits import pool_image_ids
from fsad.devices import claim_device
from fsad.diffusion.image_sets import generated_image_paths
from fsad.features.extract import ExtractJob, extract
from fsad.io import read_json, write_json
from fsad.logs import job_logging

smk = snakemake  # noqa: F821
generated = "images" in smk.input.keys()  # extract_generated_features: a directory of generated images
with job_logging(smk.log[0]) as log, claim_device() as device:
    if generated:
        image_paths = generated_image_paths(smk.input.images)
    else:
        manifest = read_manifest(smk.input.manifest, smk.wildcards.category).set_index("image_id")
        ids = pool_image_ids(read_json(smk.input.pool))
        image_paths = {i: manifest.at[i, "image_path"] for i in ids}
    job = ExtractJob(
        backbone_key=smk.wildcards.backbone,
        backbone_spec=smk.params.backbone,
        image_paths=image_paths,
        store_path=smk.output.store,
        window_sizes=smk.params.window_sizes,
        layers=smk.params.layers,
        vv_layers=smk.params.vv_layers,
        mid_layers=smk.params.mid_layers,
        # batch size and workers change no number: read from the config, not params, so changing them reruns nothing
        **run_settings(smk.config, backbone_name(smk.wildcards.backbone)),
        weights_fallback=smk.params.weights_fallback,
        seed=smk.params.seed,
        threads=smk.threads,
    )
    summary = extract(job, device)
    log.info("features: %s", summary)
    if not generated:
        asked = {"window_sizes": job.window_sizes, "layers": job.layers, "vv_layers": job.vv_layers, "mid_layers": job.mid_layers}
        write_json(smk.output.index, {**summary, "image_ids": ids, **asked})
        # An update with nothing to add leaves the store as it was; it is this job's output all the same, so it
        # must not look older than the job's inputs (Snakemake would rerun the job forever).
        os.utime(smk.output.store)
