"""Rule gallery: anomaly-map overlays of the best and worst test images of one category (run 0)."""

from fsad.data.manifest import read_manifest
from fsad.evaluation.gallery import write_gallery
from fsad.logs import job_logging

smk = snakemake  # noqa: F821
with job_logging(smk.log[0]):
    wc = smk.wildcards
    write_gallery(
        smk.input.scores,
        smk.input.maps,
        read_manifest(smk.input.manifest, wc.category),
        smk.output.gallery,
        f"{wc.scorer} / {wc.dataset} / {wc.category} / {wc.setting} (run 0)",
        n=smk.params.per_group,
    )
