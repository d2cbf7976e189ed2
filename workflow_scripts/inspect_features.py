"""Rule inspect_features: encode the readable images of an inspection's folder into its own store (only new files)."""

import os

from fsad.backbones.spec import backbone_name, run_settings
from fsad.devices import claim_device
from fsad.features.extract import ExtractJob, extract
from fsad.inspect.folder import folder_files, readable_images
from fsad.io import write_json
from fsad.logs import job_logging

smk = snakemake  # noqa: F821
with job_logging(smk.log[0]) as log, claim_device() as device:
    images, unreadable = readable_images(folder_files(smk.input.images))
    for row in unreadable:
        log.warning("cannot read %s: %s", row["file"], row["reason"])
    job = ExtractJob(
        backbone_key=smk.wildcards.backbone,
        backbone_spec=smk.params.backbone,
        image_paths=images,
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
    summary = extract(job, device) if images else {"images": 0, "encoded": 0}
    log.info("features: %s", summary)
    write_json(smk.output.index, {"images": images, "unreadable": unreadable, "summary": summary})
    if images:
        os.utime(smk.output.store)  # an update with nothing new is this job's output all the same (see extract_features)
