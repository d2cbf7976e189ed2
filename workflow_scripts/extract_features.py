"""Rules extract_features and extract_generated_features: encode a category's test subset and reference pools into
its store, or a run's generated images (pool or personalized) into their own store."""

import os

from fsad.data.manifest import read_manifest
from fsad.data.splits import pool_image_ids
from fsad.devices import claim_device
from fsad.diffusion.image_sets import generated_image_paths
from fsad.features.extract import extract, rule_extract_job
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
    job = rule_extract_job(smk, image_paths)
    summary = extract(job, device)
    log.info("features: %s", summary)
    if not generated:
        asked = {"window_sizes": job.window_sizes, "layers": job.layers, "vv_layers": job.vv_layers, "mid_layers": job.mid_layers}
        write_json(smk.output.index, {**summary, "image_ids": ids, **asked})
        # An update with nothing to add leaves the store as it was; it is this job's output all the same, so it
        # must not look older than the job's inputs (Snakemake would rerun the job forever).
        os.utime(smk.output.store)
