"""Rule extract_features: encode the images of a category's test subset and reference pools into the store."""

import os

from fsad.backbones.spec import backbone_name, run_settings
from fsad.data.manifest import read_manifest
from fsad.data.splits import pool_image_ids
from fsad.devices import claim_device
from fsad.features.extract import ExtractJob, extract
from fsad.io import read_json, write_json
from fsad.logs import job_logging

smk = snakemake  # noqa: F821
with job_logging(smk.log[0]) as log, claim_device() as device:
    manifest = read_manifest(smk.input.manifest, smk.wildcards.category).set_index("image_id")
    ids = pool_image_ids(read_json(smk.input.pool))
    job = ExtractJob(
        backbone_key=smk.wildcards.backbone,
        backbone_spec=smk.params.backbone,
        image_paths={i: manifest.at[i, "image_path"] for i in ids},
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
    asked = {"window_sizes": job.window_sizes, "layers": job.layers, "vv_layers": job.vv_layers, "mid_layers": job.mid_layers}
    write_json(smk.output.index, {**summary, "image_ids": ids, **asked})
    # An update with nothing to add leaves the store as it was; it is this job's output all the same, so it
    # must not look older than the job's inputs (Snakemake would rerun the job forever).
    os.utime(smk.output.store)
