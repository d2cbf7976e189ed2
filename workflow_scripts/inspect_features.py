"""Rule inspect_features: encode the readable images of an inspection's folder into its own store (only new files)."""

import os

from fsad.devices import claim_device
from fsad.features.extract import extract, rule_extract_job
from fsad.inspect.folder import folder_files, readable_images
from fsad.io import write_json
from fsad.logs import job_logging

smk = snakemake  # noqa: F821
with job_logging(smk.log[0]) as log, claim_device() as device:
    images, unreadable = readable_images(folder_files(smk.input.images))
    for row in unreadable:
        log.warning("cannot read %s: %s", row["file"], row["reason"])
    job = rule_extract_job(smk, images)
    summary = extract(job, device) if images else {"images": 0, "encoded": 0}
    log.info("features: %s", summary)
    write_json(smk.output.index, {"images": images, "unreadable": unreadable, "summary": summary})
    if images:
        os.utime(smk.output.store)  # an update with nothing new is this job's output all the same (see extract_features)
