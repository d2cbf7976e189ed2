"""Rule extract_features: encode the images of a category's test subset and reference pools into the store."""

import os

from fsad.data.manifest import read_manifest
from fsad.data.splits import pool_image_ids
from fsad.devices import claim_device
from fsad.features.extract import extract_with_rule_params
from fsad.io import read_json, write_json
from fsad.logs import job_logging

smk = snakemake  # noqa: F821
with job_logging(smk.log[0]) as log, claim_device() as device:
    manifest = read_manifest(smk.input.manifest, smk.wildcards.category).set_index("image_id")
    ids = pool_image_ids(read_json(smk.input.pool))
    summary = extract_with_rule_params(
        smk.params,
        smk.config,
        backbone_name=smk.wildcards.backbone,
        image_paths={i: manifest.at[i, "image_path"] for i in ids},
        cache_path=smk.output.store,
        device=device,
        threads=smk.threads,
    )
    log.info("features: %s", summary)
    asked = {"window_sizes": smk.params.window_sizes, "layers": smk.params.layers, "vv_layers": smk.params.vv_layers}
    write_json(smk.output.index, {**summary, "image_ids": ids, **asked})
    # An update with nothing to add leaves the store as it was; it is this job's output all the same, so it
    # must not look older than the job's inputs (Snakemake would rerun the job forever).
    os.utime(smk.output.store)
